"""Training targets as every family's loss receives them: per image ``[K, 4 + 2L + 1]`` rows (normalised
box x1, y1, x2, y2, the family's L keypoints x/y, landmark flag; :mod:`mobilekit.data.dataset`), and their
batching."""

from __future__ import annotations

import torch


def pad_targets(targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``[K_i, C]`` -> padded ``[B, K, C]`` and a validity mask ``[B, K]`` (K >= 1)."""
    batch = len(targets)
    width = targets[0].shape[1] if batch else 15
    max_faces = max([1] + [int(t.shape[0]) for t in targets])
    device = targets[0].device if batch else torch.device("cpu")
    padded = torch.zeros(batch, max_faces, width, dtype=torch.float32, device=device)
    valid = torch.zeros(batch, max_faces, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        padded[i, : t.shape[0]] = t.float()
        valid[i, : t.shape[0]] = True
    return padded, valid
