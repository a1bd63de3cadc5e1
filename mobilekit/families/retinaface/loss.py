"""The RetinaFace MultiBox loss (Pytorch_Retinaface).

Every criterion is called as ``criterion(raw_outputs, targets) -> (total, parts)`` with ``targets``
a list of per-image ``[K, 4 + 2L + 1]`` tensors (normalised box, the family's L keypoints x/y, landmark flag;
see :mod:`mobilekit.data.dataset`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.families.retinaface.matching import MATCH_IOU, MatchedTargets, match_targets
from mobilekit.families.retinaface.priors import PriorConfig, prior_boxes_torch

NEG_POS_RATIO = 7
LOC_WEIGHT = 2.0  # Pytorch_Retinaface train.py: loss = 2 * loss_l + loss_c + loss_landm


def multibox_terms(
    loc: torch.Tensor, conf: torch.Tensor, landmarks: torch.Tensor, matched: MatchedTargets, neg_pos_ratio: int = NEG_POS_RATIO
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss_l, loss_c, loss_landm)`` of Pytorch_Retinaface ``MultiBoxLoss`` for matched targets:
    Smooth-L1 boxes and cross-entropy over positives plus 7:1 hard negatives, each divided by the
    number of positives; Smooth-L1 landmarks over faces with landmarks, divided by their count."""
    loc, conf, landmarks = loc.float(), conf.float(), landmarks.float()
    labels = matched.labels
    pos_landm = labels > 0
    num_pos_landm = pos_landm.sum().clamp(min=1).float()
    loss_landm = F.smooth_l1_loss(landmarks[pos_landm], matched.landmarks[pos_landm], reduction="sum")

    pos = labels != 0
    loss_l = F.smooth_l1_loss(loc[pos], matched.loc[pos], reduction="sum")

    # Hard negative mining: rank background priors by their classification loss.
    with torch.no_grad():
        background_loss = torch.logsumexp(conf, dim=-1) - conf[..., 0]
        background_loss = background_loss.masked_fill(pos, 0.0)
        order = background_loss.sort(dim=1, descending=True).indices
        rank = order.sort(dim=1).indices
        num_pos = pos.sum(dim=1, keepdim=True)
        num_neg = torch.clamp(neg_pos_ratio * num_pos, max=pos.shape[1] - 1)
        neg = rank < num_neg
    selected = pos | neg
    loss_c = F.cross_entropy(conf[selected], pos[selected].long(), reduction="sum")

    n = num_pos.sum().clamp(min=1).float()
    return loss_l / n, loss_c / n, loss_landm / num_pos_landm


class MultiBoxLoss(nn.Module):
    """RetinaFace MultiBox loss for one input size: ``loc_weight * loss_l + loss_c + loss_landm``."""

    def __init__(
        self,
        prior_cfg: PriorConfig,
        image_size: tuple[int, int],
        loc_weight: float = LOC_WEIGHT,
        threshold: float = MATCH_IOU,
        neg_pos_ratio: int = NEG_POS_RATIO,
    ) -> None:
        super().__init__()
        self.variances = tuple(prior_cfg.variances)
        self.loc_weight = loc_weight
        self.threshold = threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.register_buffer("priors", prior_boxes_torch(prior_cfg, image_size), persistent=False)

    def match(self, targets: list[torch.Tensor]) -> MatchedTargets:
        return match_targets([t.to(self.priors.device) for t in targets], self.priors, self.variances, self.threshold)

    def forward(self, raw_outputs, targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loc, conf, landmarks = raw_outputs
        if loc.shape[1] != self.priors.shape[0]:
            raise ValueError(f"the model gives {loc.shape[1]} priors but the loss was built for {self.priors.shape[0]}; "
                             "train at the image size the criterion was built for")
        loss_l, loss_c, loss_landm = multibox_terms(loc, conf, landmarks, self.match(targets), self.neg_pos_ratio)
        total = self.loc_weight * loss_l + loss_c + loss_landm
        return total, {"box": loss_l.detach(), "cls": loss_c.detach(), "landmarks": loss_landm.detach()}
