"""The DDP code path on one device: run under ``torchrun --nproc_per_node 1``, it trains a few steps
with mobilekit's ``Trainer`` twice on the same batches, plainly and with DistributedDataParallel kept
on (``force_ddp``: NCCL on CUDA, gloo on CPU), and prints both loss sequences as one JSON line."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mobilekit.benchmarks.measure import child_entry
from mobilekit.training import TrainConfig
from mobilekit.training.loop import Trainer


def step_losses(trainer: Trainer, batches: list) -> list[float]:
    return [trainer._step(images, targets, 0, step)["total"] for step, (images, targets, _) in enumerate(batches)]


def compare(config: TrainConfig, steps: int) -> dict:
    """Loss per step of the plain run and of the forced-DDP run on the plain run's first ``steps`` batches."""
    plain = Trainer(config)
    try:
        batches = [batch for batch, _ in zip(plain._loader(0), range(steps))]
        plain_losses = step_losses(plain, batches)
    finally:
        plain.close()
    forced = Trainer(replace(config, force_ddp=True))
    try:
        if not isinstance(forced.ddp_model, DistributedDataParallel):
            raise RuntimeError("force_ddp did not wrap the model in DistributedDataParallel")
        info = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "device": str(forced.device)}
        ddp_losses = step_losses(forced, batches)
    finally:
        forced.close()
    return {**info, "plain_losses": plain_losses, "ddp_losses": ddp_losses}


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="featherface_v1")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mobilekit_ddp_check_") as out:
        config = TrainConfig(model=args.model, data=args.data, out=out, epochs=1, batch=args.batch, imgsz=args.imgsz,
                             device=args.device, progress=False, tensorboard=False)  # fmt: skip
        print(json.dumps(compare(config, args.steps)))


if __name__ == "__main__":
    child_entry(_main)
