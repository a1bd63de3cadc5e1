"""BlazeFace's training loss: centre-sampled anchor matching, box/keypoint regression in input pixels,
sigmoid scores with hard negatives.

MediaPipe's anchors have a fixed size (w = h = 1, :mod:`mobilekit.families.blazeface.decode`): there is no anchor
box to compute an IoU with, and the network regresses box sizes and keypoints in input pixels relative to
the anchor centre. So:

* matching: the network's anchor slots specialise in the sizes MediaPipe's calculator would give them
  (:func:`~mobilekit.families.blazeface.decode.ssd_anchor_scales`; with Google's short-range weights a slot's box
  regression collapses towards its scale), so a face only claims anchors whose scale is within
  ``SCALE_RATIO`` of its size (``sqrt(w * h)`` normalised), or of the nearest scale when none is; among
  those, the anchors whose centre lies in the face's central region (the box shrunk to ``CENTRE_FRACTION``
  of its width and height around its centre) and those at the anchor centre nearest the face's (so small
  faces get positives too); an anchor claimed by several faces goes to the one whose centre is nearest
  in units of the face's size. Full range has one slot per cell: pure centre sampling;
* regression targets, in the network's units: ``(cx - anchor_cx) * W``, ``(cy - anchor_cy) * H``,
  ``w * W``, ``h * H``, keypoints ``(x - anchor_cx) * W``, ``(y - anchor_cy) * H``; Smooth-L1 on the error
  divided by ``REGRESSION_SCALE`` times the face's width (x columns) or height (y columns), scale-free like
  RetinaFace's variance-encoded offsets; box terms are averaged over positives, keypoint terms over the
  positives' supervised keypoints (faces with landmarks, keypoints the labels have: ``keypoint_mask``);
* scores: binary cross-entropy on the logits of the positives and of ``neg_pos_ratio`` hardest negatives
  per positive, divided by the number of positives.

``criterion(raw, targets) -> (loc_weight * box + cls + keypoints, parts)`` like every mobilekit loss, with
``raw = (regressors [B, N, 4 + 2L], classificators [B, N, 1])`` and ``targets`` per image
``[K, 4 + 2L + 1]`` (:mod:`mobilekit.data.dataset`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.families.blazeface.anchors import SsdAnchorConfig
from mobilekit.families.blazeface.decode import BOX_COLUMNS, ssd_anchor_scales, ssd_anchors
from mobilekit.targets import pad_targets

CENTRE_FRACTION = 0.5  # an anchor centre within the middle half of a face's box (each axis) is a positive
SCALE_RATIO = 2**0.5  # a face claims the anchor slots whose scale is within half an octave of its size
REGRESSION_SCALE = 0.1  # a regression error of 10 % of the face's size costs 1 (RetinaFace's variance 0.1)
NEG_POS_RATIO = 3


@dataclass
class BlazeMatch:
    """Per anchor: ``face`` [B, N] the index of its face in the padded targets (-1 background), that face's
    target row ``truth`` [B, N, 4 + 2L + 1] (face 0's for background anchors), and the regression targets
    ``regression`` [B, N, 4 + 2L] in input pixels relative to the anchor centre."""

    face: torch.Tensor
    truth: torch.Tensor
    regression: torch.Tensor

    @property
    def positive(self) -> torch.Tensor:
        return self.face >= 0


def match_anchors(targets: list[torch.Tensor], anchors: torch.Tensor, scales: torch.Tensor, image_size: tuple[int, int]) -> BlazeMatch:
    """Assign every anchor (``[N, 2]`` normalised centres, slot ``scales`` [N]) a face or background (see
    the module notes)."""
    truths, valid = pad_targets(targets)
    truths, valid = truths.to(anchors.device), valid.to(anchors.device)
    height, width = image_size
    boxes = truths[..., :4]
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # [B, K, 2]
    sizes = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1e-6)
    log_ratio = (scales.log()[None, None] - 0.5 * sizes.log().sum(-1, keepdim=True)).abs()  # [B, K, N]
    fits = log_ratio <= torch.maximum(log_ratio.amin(dim=-1, keepdim=True), log_ratio.new_tensor(math.log(SCALE_RATIO))) + 1e-6
    offsets = (anchors[None, None] - centres[:, :, None]) / sizes[:, :, None]  # [B, K, N, 2] in face sizes
    distance = offsets.abs().amax(dim=-1)  # Chebyshev distance in face sizes
    pixels = ((anchors[None, None] - centres[:, :, None]) * anchors.new_tensor([width, height])).norm(dim=-1)
    pixels = pixels.masked_fill(~fits, float("inf"))
    nearest = pixels <= pixels.amin(dim=-1, keepdim=True) + 1e-3  # every fitting anchor at the nearest centre
    claims = ((distance <= CENTRE_FRACTION / 2) | nearest) & fits & valid[..., None]
    distance = distance.masked_fill(~claims, float("inf"))
    best, face = distance.min(dim=1)  # [B, N]
    face = face.masked_fill(torch.isinf(best), -1)

    matched = torch.gather(truths, 1, face.clamp(min=0)[..., None].expand(-1, -1, truths.shape[2]))
    scale = anchors.new_tensor([width, height])
    box = matched[..., :4]
    points = matched[..., 4:-1].unflatten(-1, (-1, 2))
    regression = torch.cat(
        [
            ((box[..., :2] + box[..., 2:]) / 2 - anchors[None]) * scale,
            (box[..., 2:] - box[..., :2]) * scale,
            ((points - anchors[None, :, None]) * scale).flatten(-2),
        ],
        dim=-1,
    )
    return BlazeMatch(face, matched, regression)


class BlazeFaceLoss(nn.Module):
    """The loss of a BlazeFace model trained at ``image_size`` (H, W); ``keypoint_mask`` (one flag per
    keypoint) says which keypoints the labels supervise."""

    def __init__(
        self,
        anchor_cfg: SsdAnchorConfig,
        image_size: tuple[int, int],
        keypoint_mask: tuple[bool, ...],
        loc_weight: float = 1.0,
        neg_pos_ratio: int = NEG_POS_RATIO,
    ) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        self.loc_weight = loc_weight
        self.neg_pos_ratio = neg_pos_ratio
        anchors = torch.from_numpy(ssd_anchors(anchor_cfg, self.image_size))[:, :2].contiguous()
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("scales", torch.from_numpy(ssd_anchor_scales(anchor_cfg, self.image_size)), persistent=False)
        self.register_buffer("keypoint_mask", torch.tensor(keypoint_mask, dtype=torch.bool), persistent=False)

    def match(self, targets: list[torch.Tensor]) -> BlazeMatch:
        return match_anchors(targets, self.anchors, self.scales, self.image_size)

    def forward(self, raw_outputs, targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        regressors, logits = (t.float() for t in raw_outputs)
        if regressors.shape[1] != self.anchors.shape[0]:
            raise ValueError(f"the model gives {regressors.shape[1]} anchors but the loss was built for {self.anchors.shape[0]}; "
                             "train at the image size the criterion was built for")
        num_keypoints = (regressors.shape[-1] - BOX_COLUMNS) // 2
        if num_keypoints != self.keypoint_mask.numel():
            raise ValueError(f"the model gives {num_keypoints} keypoints but the loss was built for {self.keypoint_mask.numel()}")
        match = self.match(targets)
        positive = match.positive
        num_pos = positive.sum().clamp(min=1).float()

        matched = match.truth
        face_size = (matched[..., 2:4] - matched[..., 0:2]).clamp(min=1e-6) * self.anchors.new_tensor(self.image_size[::-1])
        unit = REGRESSION_SCALE * face_size.repeat(1, 1, 2 + num_keypoints)  # x columns by width, y by height
        error = F.smooth_l1_loss(regressors / unit, match.regression / unit, reduction="none")
        loss_box = error[..., :BOX_COLUMNS][positive].sum() / num_pos
        supervised = positive[..., None] & (matched[..., -1:] > 0) & self.keypoint_mask.repeat_interleave(2)[None, None]
        loss_keypoints = error[..., BOX_COLUMNS:][supervised].sum() / (supervised.sum().clamp(min=1).float() / 2)

        logits = logits.squeeze(-1)
        with torch.no_grad():  # hard negatives: the background anchors the network scores highest
            background = logits.masked_fill(positive, float("-inf"))
            rank = background.sort(dim=1, descending=True).indices.sort(dim=1).indices
            num_neg = (self.neg_pos_ratio * positive.sum(dim=1, keepdim=True)).clamp(min=self.neg_pos_ratio, max=logits.shape[1] - 1)
            negative = (rank < num_neg) & ~positive
        selected = positive | negative
        loss_cls = F.binary_cross_entropy_with_logits(logits[selected], positive[selected].float(), reduction="sum") / num_pos
        total = self.loc_weight * loss_box + loss_cls + loss_keypoints
        return total, {"box": loss_box.detach(), "cls": loss_cls.detach(), "landmarks": loss_keypoints.detach()}
