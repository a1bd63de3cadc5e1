"""Knowledge distillation from a teacher detector with the same priors (e.g. FeatherFace V1 -> V2)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DistillationLoss(nn.Module):
    """KD terms added to the ground-truth loss.

    * ``kd_cls``: KL(teacher || student) of the face/background distributions at temperature ``T``,
      scaled by ``T**2``, averaged over priors;
    * ``kd_box`` / ``kd_landmarks``: Smooth-L1 of the student's box and landmark regressions towards
      the teacher's, on the priors the teacher finds confident (face probability > ``score_threshold``),
      divided by their number.
    """

    def __init__(self, temperature: float = 2.0, weight: float = 1.0, score_threshold: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature
        self.weight = weight
        self.score_threshold = score_threshold

    def forward(self, student_raw, teacher_raw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s_loc, s_conf, s_lm = (t.float() for t in student_raw)
        t_loc, t_conf, t_lm = (t.detach().float() for t in teacher_raw)
        if s_conf.shape != t_conf.shape:
            raise ValueError(f"teacher and student disagree on priors: {tuple(t_conf.shape)} vs {tuple(s_conf.shape)}")
        temp = self.temperature
        kl = F.kl_div(F.log_softmax(s_conf / temp, dim=-1), F.log_softmax(t_conf / temp, dim=-1), reduction="none", log_target=True)
        kd_cls = kl.sum(dim=-1).mean() * temp**2
        confident = F.softmax(t_conf, dim=-1)[..., 1] > self.score_threshold
        n = confident.sum().clamp(min=1).float()
        kd_box = F.smooth_l1_loss(s_loc[confident], t_loc[confident], reduction="sum") / n
        kd_lm = F.smooth_l1_loss(s_lm[confident], t_lm[confident], reduction="sum") / n
        total = self.weight * (kd_cls + kd_box + kd_lm)
        return total, {"kd_cls": kd_cls.detach(), "kd_box": kd_box.detach(), "kd_landmarks": kd_lm.detach()}


def default_teacher_model(student: str) -> str:
    """FeatherFace V2 learns from V1; any other student from a teacher of its own architecture."""
    return "featherface_v1" if student == "featherface_v2" else student
