"""``TrainConfig``: every training setting in one dataclass, loadable from YAML with overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mobilekit.errors import MobilekitError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_IMGSZ = 256


@dataclass
class TrainConfig:
    """Defaults are tuned for the synthetic dataset (``mobilekit data synth --imgsz 256``) on a small
    CPU: featherface_v1 with the ImageNet backbone reaches val AP@0.5 0.917 in 6 epochs of 240 images
    at batch 8 and lr 4e-3 (under 2 minutes on 2 cores; batch 16 at 3e-3 needed 10 epochs for the same
    AP), validating every third epoch and after the last; ``mobilekit benchmark-train`` measures the
    throughput."""

    model: str = "featherface_v1"
    data: str = ""
    out: str = "runs/train"
    epochs: int = 6
    batch: int | str = 8  # or "auto" (CUDA: from free GPU memory)
    imgsz: int | None = None  # None: DEFAULT_IMGSZ, or the model's own input size for families made for it (BlazeFace)
    device: str = "auto"
    amp: bool = False
    workers: int = 0
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 is fastest on a busy shared CPU
    seed: int = 0
    optimizer: str = "adamw"
    lr: float = 4e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    final_lr_ratio: float = 0.02
    step_milestones: tuple[float, ...] = (0.6, 0.85)  # fractions of the run, for schedule "step"
    grad_clip: float = 10.0
    ema: bool = True
    ema_decay: float = 0.998
    ema_tau: float = 100.0  # EMA warm-up in optimiser steps
    loc_weight: float = 2.0
    bn_calibration_images: int = 64  # recompute batch-norm statistics on this many training images before each evaluation (0: off)
    eval_every: int = 3  # and always after the last epoch
    eval_imgsz: int | None = None  # None: imgsz
    resume: str | None = None
    pretrained_backbone: str | None = None
    init_weights: str | None = None  # start from these weights (every key that fits), e.g. to fine-tune
    from_scratch: bool = False  # models with released weights (yunet_n/_s) start from them unless this is set or init_weights is given
    teacher: str | None = None
    teacher_model: str | None = None  # None: featherface_v1 when the student is featherface_v2, else the student
    kd_temperature: float = 2.0
    kd_weight: float = 1.0
    kd_score_threshold: float = 0.5
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the training model (minutes of compilation on a small CPU)
    force_ddp: bool = False  # under torchrun, keep DistributedDataParallel on at world size 1
    progress: bool = True
    tensorboard: bool = True

    def validate(self) -> "TrainConfig":
        if not self.data:
            raise MobilekitError("no dataset given: pass --data DIR (a folder with train/label.txt and val/label.txt)")
        if self.optimizer not in OPTIMIZERS:
            raise MobilekitError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise MobilekitError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise MobilekitError(f"unknown device {self.device!r}; choose from {', '.join(DEVICES)} or cuda:N")
        if self.batch != "auto" and (not isinstance(self.batch, int) or self.batch < 2):
            raise MobilekitError(f"batch must be an integer >= 2 or 'auto', got {self.batch!r}")
        for name in ("epochs", "imgsz", "eval_every"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise MobilekitError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.imgsz is not None and self.imgsz % 32:
            raise MobilekitError(f"imgsz must be a multiple of 32, got {self.imgsz}")
        if self.lr <= 0:
            raise MobilekitError(f"lr must be positive, got {self.lr}")
        if self.threads < 0:
            raise MobilekitError(f"threads must be >= 0, got {self.threads}")
        if self.workers < 0:
            raise MobilekitError(f"workers must be >= 0, got {self.workers}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (checkpoints load with ``weights_only=True``)."""
        d = asdict(self)
        d["step_milestones"] = list(self.step_milestones)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MobilekitError(f"{source}: unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if "step_milestones" in values:
            values["step_milestones"] = tuple(values["step_milestones"])
        if isinstance(values.get("batch"), str) and values["batch"] != "auto":
            try:
                values["batch"] = int(values["batch"])
            except ValueError:
                raise MobilekitError(f"{source}: batch must be an integer or 'auto', got {values['batch']!r}") from None
        return cls(**values)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- YAML file (if given) <- ``overrides`` (entries that are None are ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MobilekitError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise MobilekitError(f"cannot parse {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise MobilekitError(f"{path} must hold a mapping of training settings, found {type(loaded).__name__}")
        data.update(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(data, str(path) if path else "config")
