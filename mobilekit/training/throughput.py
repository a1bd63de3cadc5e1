"""Training throughput: images per second of full training steps (forward, loss, backward, AdamW)."""

from __future__ import annotations

import time

import torch

from mobilekit.models import create_model
from mobilekit.training.losses import build_criterion


def synthetic_batch(batch: int, imgsz: int, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random RGB images with three faces each (normalised target rows with landmarks)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, imgsz, imgsz, generator=gen) * 255
    face = torch.tensor([[0.1, 0.1, 0.3, 0.35], [0.5, 0.2, 0.6, 0.32], [0.4, 0.6, 0.8, 0.95]])
    points = face[:, :2].repeat(1, 5) + 0.5 * (face[:, 2:] - face[:, :2]).repeat(1, 5)
    target = torch.cat([face, points, torch.ones(3, 1)], dim=1)
    return images, [target.clone() for _ in range(batch)]


def measure_training_throughput(model_name: str, imgsz: int = 640, batch: int = 8, steps: int = 3, warmup: int = 1) -> float:
    """Images per second over ``steps`` timed training steps after ``warmup`` untimed ones (CPU)."""
    torch.manual_seed(0)
    model = create_model(model_name).train()
    criterion = build_criterion(model, (imgsz, imgsz))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images, targets = synthetic_batch(batch, imgsz)
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        loss, _ = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - start)
