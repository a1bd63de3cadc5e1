"""Prior matching and target encoding for RetinaFace-style heads (Pytorch_Retinaface ``match``).

Vectorised over the batch: targets of different images are padded to the same face count.
The result equals the reference's per-image loop exactly, including its tie rules (a prior that
is the best prior of several faces goes to the last of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mobilekit.box_coder import box_iou, encode_boxes, encode_landmarks
from mobilekit.targets import pad_targets

MATCH_IOU = 0.35  # a prior is a face when its best IoU reaches this
FORCE_MIN_IOU = 0.2  # a face is forced onto its best prior only when that IoU reaches this


@dataclass
class MatchedTargets:
    """Per prior: ``loc`` [B, N, 4] and ``landmarks`` [B, N, 2L] regression targets, ``labels`` [B, N]
    (0 background, 1 face with landmarks, -1 face without landmarks)."""

    loc: torch.Tensor
    labels: torch.Tensor
    landmarks: torch.Tensor


def point_form(priors: torch.Tensor) -> torch.Tensor:
    """Priors (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


def match_targets(
    targets: list[torch.Tensor], priors: torch.Tensor, variances: tuple[float, float], threshold: float = MATCH_IOU
) -> MatchedTargets:
    """Assign every prior a face (or background) and encode the regression targets.

    ``targets``: per image ``[K, 4 + 2L + 1]`` rows ``x1, y1, x2, y2, 2L landmark coords, label`` (normalised);
    ``priors``: ``[N, 4]`` (cx, cy, w, h). Follows Pytorch_Retinaface ``utils/box_utils.match``.
    """
    truths, valid = pad_targets(targets)
    truths = truths.to(priors.device)
    valid = valid.to(priors.device)
    batch, max_faces = valid.shape
    num_priors = priors.shape[0]
    corners = point_form(priors)

    overlaps = box_iou(truths[..., :4].reshape(-1, 4), corners).view(batch, max_faces, num_priors)
    overlaps = overlaps.masked_fill(~valid[..., None], -1.0)  # padding never wins a prior

    best_prior_overlap, best_prior_idx = overlaps.max(dim=2)  # [B, K]
    forced = valid & (best_prior_overlap >= FORCE_MIN_IOU)
    has_forced = forced.any(dim=1)  # images without one are all background in the reference

    best_truth_overlap, best_truth_idx = overlaps.max(dim=1)  # [B, N]
    # Each forced face's best prior counts as a full match ...
    rows = torch.arange(batch, device=priors.device)[:, None].expand(batch, max_faces)
    best_truth_overlap = best_truth_overlap.index_put((rows[forced], best_prior_idx[forced]), torch.tensor(2.0, device=priors.device))
    # ... and every real face takes its best prior, the last face winning (the reference's loop order).
    face_ids = torch.arange(max_faces, device=priors.device)[None].expand(batch, max_faces)
    flat_prior = (rows * num_priors + best_prior_idx)[valid]
    claimed = torch.full((batch * num_priors,), -1, dtype=torch.long, device=priors.device)
    claimed = claimed.scatter_reduce(0, flat_prior, face_ids[valid], reduce="amax").view(batch, num_priors)
    best_truth_idx = torch.where(claimed >= 0, claimed, best_truth_idx)

    matched = torch.gather(truths, 1, best_truth_idx[..., None].expand(batch, num_priors, truths.shape[2]))
    labels = matched[..., -1].round().long()
    labels = labels.masked_fill(best_truth_overlap < threshold, 0)
    labels = labels.masked_fill(~has_forced[:, None], 0)
    loc = encode_boxes(matched[..., :4], priors, variances)
    landmarks = encode_landmarks(matched[..., 4:-1], priors, variances)
    return MatchedTargets(loc=loc, labels=labels, landmarks=landmarks)
