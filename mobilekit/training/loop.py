"""The training loop: ``train(config) -> TrainResult``.

CPU or CUDA (AMP in bf16 where supported else fp16 with a GradScaler, channels_last, pinned memory,
cudnn.benchmark, optional ``torch.compile``), one process or many under ``torchrun``
(DistributedDataParallel, optionally kept on for a single process), EMA weights,
warm-up + cosine/step schedule, gradient clipping, a NaN/inf guard, seeded determinism and atomic
per-epoch checkpoints that resume exactly.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, DistributedSampler

from mobilekit.atomic import write_json_atomic
from mobilekit.checkpoint import CheckpointError, atomic_save, load_backbone, load_partial, load_weights, read_training_checkpoint
from mobilekit.config import DeployConfig
from mobilekit.errors import MobilekitError
from mobilekit.families import build_criterion, family_of
from mobilekit.inference import resolve_device
from mobilekit.models import create_model, released_weights
from mobilekit.training.autobatch import auto_batch_size
from mobilekit.training.batchnorm import recalibrate_batchnorm
from mobilekit.training.config import DEFAULT_IMGSZ, TrainConfig
from mobilekit.training.distill import DistillationLoss, default_teacher_model
from mobilekit.training.distributed import DistInfo, all_finite, barrier, cleanup, init_distributed
from mobilekit.training.ema import ModelEMA
from mobilekit.training.run_log import RunLog

LAST, BEST, BEST_WEIGHTS = "last.pt", "best.pt", "best_weights.pth"


class TrainingDiverged(MobilekitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    best_weights: Path
    last_checkpoint: Path
    metrics: dict = field(default_factory=dict)


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` on ``config.data``; see :class:`TrainConfig` for every setting."""
    trainer = Trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init(worker_id: int) -> None:
    """A DataLoader worker: Python and NumPy seeded from its torch seed.

    OpenCV's thread count is left alone: ``cv2.setNumThreads`` in a forked worker waits forever for the
    parent's pool threads once the parent has used OpenCV (they do not exist in the child)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _rng_state() -> dict:
    """RNG states as tensors (checkpoints load with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from 1 %, then cosine down to ``final_lr_ratio`` or x0.1 steps at the milestones."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    if cfg.schedule == "step":
        return 0.1 ** sum(step >= m * total for m in cfg.step_milestones)
    progress = (step - warmup) / max(total - warmup, 1)
    return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def training_size(cfg: TrainConfig, deploy: DeployConfig) -> int:
    """The square training size: ``cfg.imgsz`` or :data:`DEFAULT_IMGSZ`; a family whose anchors and pixel
    regressions are for the model's own input size (``native_input_only``) trains at that size only."""
    if not family_of(deploy).native_input_only:
        return cfg.imgsz or DEFAULT_IMGSZ
    height, width = deploy.input_size
    if height != width or (cfg.imgsz is not None and cfg.imgsz != height):
        raise MobilekitError(f"{deploy.name} trains at its own input size {height}x{width} only, got --imgsz {cfg.imgsz}")
    return height


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.cfg = cfg = config.validate()
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device.type, cfg.force_ddp)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.console = Console(quiet=not self.dist.is_main, soft_wrap=True)
        self.out = Path(cfg.out)
        _seed_everything(cfg.seed + self.dist.rank)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        self.model = create_model(cfg.model).to(self.device)
        self.imgsz = training_size(cfg, self.model.deploy)
        if cfg.pretrained_backbone:
            report = load_backbone(self.model, cfg.pretrained_backbone)
            self.log(f"backbone: {report.describe()} from {cfg.pretrained_backbone}")
        init_weights = cfg.init_weights
        if not (init_weights or cfg.resume or cfg.from_scratch):
            init_weights = released_weights(cfg.model)  # yunet_n / yunet_s: fine-tune the authors' weights
        if init_weights:
            report = load_partial(self.model, init_weights)
            self.log(f"initial weights: {report.describe()} from {init_weights}")
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.criterion = build_criterion(self.model, (self.imgsz, self.imgsz), cfg.loc_weight).to(self.device)
        self.teacher, self.distill = self._build_teacher()

        self.train_set, self.has_val = self._datasets()
        self.batch = self._batch_size()
        per_process = len(self.train_set) // self.dist.world_size
        self.steps_per_epoch = per_process // self.batch
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: _lr_factor(cfg, s, self.steps_per_epoch))
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None
        self.start_epoch, self.best_ap, self.history = 0, -1.0, []
        if cfg.resume:
            self._resume(Path(cfg.resume))
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.ddp_model = torch.compile(self.ddp_model)  # checkpoints, EMA and evaluation keep self.model
        self.run_log = RunLog(self.out, cfg.tensorboard, self.start_epoch) if self.dist.is_main else None

    # -- set-up ---------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def _amp_dtype(self) -> torch.dtype | None:
        if not self.cfg.amp:
            return None
        if self.device.type != "cuda":
            self.log("[yellow]--amp needs CUDA; training in float32 on CPU[/]")
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _build_teacher(self) -> tuple[nn.Module | None, DistillationLoss | None]:
        cfg = self.cfg
        if not cfg.teacher:
            return None, None
        if not family_of(self.model.deploy).distillation:
            raise MobilekitError(f"distillation needs a RetinaFace-style student; {cfg.model} is a {self.model.deploy.decoder!r} model")
        name = cfg.teacher_model or default_teacher_model(cfg.model)
        teacher = create_model(name)
        report = load_weights(teacher, cfg.teacher)
        if teacher.deploy.anchors != self.model.deploy.anchors:
            raise MobilekitError(f"teacher {name} and student {cfg.model} use different priors; distillation needs the same")
        teacher = teacher.eval().to(self.device)
        if self.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.log(f"teacher: {name} from {cfg.teacher} ({report.describe()})")
        return teacher, DistillationLoss(cfg.kd_temperature, cfg.kd_weight, cfg.kd_score_threshold)

    def _datasets(self):
        from mobilekit.data.dataset import FaceDataset, resolve_label_file

        deploy = self.model.deploy
        family = family_of(deploy)
        train_set = FaceDataset(
            self.cfg.data, "train", self.imgsz, augment=True, mode=family.augmentation, pad_value=deploy.pad_value,
            keypoint_map=family.label_keypoint_map(deploy),
        )
        try:
            has_val = resolve_label_file(self.cfg.data, "val").parent.name == "val"
        except MobilekitError:
            has_val = False
        if not has_val:
            self.log(f"[yellow]no {self.cfg.data}/val/label.txt: no validation AP; best.pt follows the training loss[/]")
        return train_set, has_val

    def _batch_size(self) -> int:
        cfg = self.cfg
        batch = auto_batch_size(self.model, self.criterion, self.imgsz, self.device, self.amp_dtype, self.log) if cfg.batch == "auto" else int(cfg.batch)
        per_process = len(self.train_set) // self.dist.world_size
        if per_process < 2:
            raise MobilekitError(f"{self.train_set.label_file} has {len(self.train_set)} images; training needs at least 2 per process")
        if batch > per_process:
            self.log(f"[yellow]batch {batch} is larger than the {per_process} training images per process; using {per_process}[/]")
            batch = per_process
        return batch

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
        return torch.optim.AdamW(groups, lr=cfg.lr)

    def _loader(self, epoch: int) -> DataLoader:
        """A fresh loader per epoch, seeded by (seed, epoch): shuffling and augmentation replay exactly on resume."""
        from mobilekit.data.dataset import detection_collate

        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        sampler = None
        if self.dist.enabled:
            sampler = DistributedSampler(self.train_set, self.dist.world_size, self.dist.rank, shuffle=True, seed=self.cfg.seed, drop_last=True)
            sampler.set_epoch(epoch)
        return DataLoader(
            self.train_set,
            batch_size=self.batch,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=True,  # never a one-image batch (batch norm in train mode)
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=detection_collate,
            worker_init_fn=worker_init,
            generator=generator,
        )

    # -- checkpoints ----------------------------------------------------------------------------
    def _checkpoint(self, epoch: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_updates": self.ema.updates if self.ema else 0,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best_ap": self.best_ap,
            "history": self.history,
            "rng": _rng_state(),
            "config": self.cfg.to_dict(),
            "model_name": self.cfg.model,
        }

    def _resume(self, path: Path) -> None:
        ckpt = read_training_checkpoint(path)
        if ckpt["model_name"] != self.cfg.model:
            raise CheckpointError(f"{path} trains {ckpt['model_name']}, not {self.cfg.model}")
        self.model.load_state_dict(ckpt["model"])
        if self.ema and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.updates = ckpt["ema_updates"]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        self.start_epoch, self.best_ap, self.history = int(ckpt["epoch"]), float(ckpt["best_ap"]), list(ckpt["history"])
        if self.start_epoch >= self.cfg.epochs:
            self.log(f"{path} already finished {self.start_epoch} of {self.cfg.epochs} epochs; nothing to train")
        else:
            self.log(f"resuming from {path}: epoch {self.start_epoch + 1} of {self.cfg.epochs}")

    def _save(self, epoch: int, improved: bool) -> None:
        ckpt = self._checkpoint(epoch)
        atomic_save(ckpt, self.out / LAST)
        if improved:
            atomic_save(ckpt, self.out / BEST)
            atomic_save(ckpt["ema"] if self.ema else ckpt["model"], self.out / BEST_WEIGHTS)

    # -- training -------------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not (self.cfg.progress and self.dist.is_main),
            transient=True,
        )

    def train_one_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        _seed_everything(cfg.seed * 1000 + epoch + 7919 * self.dist.rank)
        self.ddp_model.train()
        sums: dict[str, float] = {}
        images_seen, steps, skipped = 0, 0, 0
        start = time.perf_counter()
        with self._progress() as progress:
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=self.steps_per_epoch, info="")
            for images, targets, n_skipped in self._loader(epoch):
                skipped += n_skipped
                if images.shape[0] < 2 and not self.dist.enabled:
                    continue  # unreadable images left less than two: no batch-norm step on one image
                parts = self._step(images, targets, epoch, steps)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
                images_seen += images.shape[0]
                rate = images_seen / (time.perf_counter() - start)
                shown = " ".join(f"{k.replace('total', 'loss').replace('landmarks', 'lmk')} {v / steps:.3g}" for k, v in sums.items())
                progress.update(task, advance=1, info=f"{shown} | lr {self.optimizer.param_groups[0]['lr']:.1e} | {rate:.1f} img/s")
        elapsed = time.perf_counter() - start
        stats = {f"loss_{k}" if k != "total" else "loss": v / max(steps, 1) for k, v in sums.items()}
        stats.update(images_per_s=images_seen * self.dist.world_size / elapsed, epoch_time_s=elapsed, skipped_images=skipped)
        return stats

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batches cross to the device (4x fewer bytes than float32), then become float32 there."""
        images = images.to(self.device, non_blocking=True).to(torch.float32)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _step(self, images: torch.Tensor, targets: list[torch.Tensor], epoch: int, step: int) -> dict[str, float]:
        cfg = self.cfg
        images = self._to_device(images)
        targets = [t.to(self.device, non_blocking=True) for t in targets]
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)
        with autocast:
            raw = self.ddp_model(images)
        total, parts = self.criterion(raw, targets)
        if self.teacher is not None:
            with torch.no_grad(), autocast:
                teacher_raw = self.teacher(images)
            kd_total, kd_parts = self.distill(raw, teacher_raw)
            total = total + kd_total
            parts = {**parts, **kd_parts}
        if not all_finite(total, self.dist):
            shown = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
            kept = self.out / LAST
            raise TrainingDiverged(
                f"loss became {float(total.detach())} at epoch {epoch + 1}, step {step + 1} ({shown}); "
                f"stopped. The last good checkpoint is {kept if kept.is_file() else 'not written yet (first epoch)'}; "
                "try a lower --lr or a larger --batch"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        return {"total": float(total.detach()), **{k: float(v) for k, v in parts.items()}}

    def recalibrate(self, epoch: int) -> None:
        """Precise batch-norm statistics for the weights that get evaluated and deployed."""
        batches = (self._to_device(images) for images, _, _ in self._loader(epoch))
        recalibrate_batchnorm(self.eval_model(), batches, self.cfg.bn_calibration_images)

    def validate(self) -> dict:
        from mobilekit.evaluation.ap import evaluate_dataset

        return evaluate_dataset(self.eval_model(), self.cfg.data, "val", self.cfg.eval_imgsz or self.imgsz)

    def fit(self) -> TrainResult:
        cfg = self.cfg
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log(
                f"training {cfg.model} on {self.device} ({self.dist.world_size} process(es)): {len(self.train_set)} images, "
                f"batch {self.batch}, {self.steps_per_epoch} steps/epoch, imgsz {self.imgsz}, "
                f"{'AMP ' + str(self.amp_dtype).replace('torch.', '') if self.amp_dtype else 'float32'} -> {self.out}"
            )
        for epoch in range(self.start_epoch, cfg.epochs):
            stats = self.train_one_epoch(epoch)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **stats}
            if self.dist.is_main:
                evaluate = self.has_val and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
                # Weights that get evaluated or may be saved as best get precise statistics; the reset
                # makes them independent of earlier recalibrations, so skipping the others changes nothing.
                if evaluate or not self.has_val or not (self.out / BEST_WEIGHTS).is_file():
                    self.recalibrate(epoch)
                if evaluate:
                    val = self.validate()
                    row.update(val_ap50=val["ap50"], val_recall=val["recall"])
                score = row["val_ap50"] if "val_ap50" in row else (-row["loss"] if not self.has_val else None)
                improved = score is not None and score > self.best_ap
                if improved:
                    self.best_ap = score
                self.history.append(row)
                self._save(epoch + 1, improved or not (self.out / BEST_WEIGHTS).is_file())
                self.run_log.epoch(self.history)
                self.log(self._summary(row))
            barrier(self.dist)
        return self._finish()

    @staticmethod
    def _summary(row: dict) -> str:
        losses = " ".join(f"{k.removeprefix('loss_')}={v:.3f}" for k, v in row.items() if k.startswith("loss"))
        val = f" val AP50={row['val_ap50']:.4f}" if "val_ap50" in row else ""
        return f"epoch {row['epoch']}: {losses}{val} lr={row['lr']:.2e} {row['images_per_s']:.1f} img/s ({row['epoch_time_s']:.0f} s)"

    def _finish(self) -> TrainResult:
        metrics = {
            "best_val_ap50": self.best_ap if self.has_val else None,
            "final_val_ap50": next((r["val_ap50"] for r in reversed(self.history) if "val_ap50" in r), None),
            "epochs": len(self.history),
            "train_time_s": sum(r["epoch_time_s"] for r in self.history),
            "history": self.history,
        }
        if self.dist.is_main:
            write_json_atomic(self.out / "metrics.json", {k: v for k, v in metrics.items() if k != "history"})
            plot = self.run_log.close(self.history)
            self.run_log = None
            self.log(f"best weights: {self.out / BEST_WEIGHTS} (val AP50 {metrics['best_val_ap50']}); curves: {plot}")
        return TrainResult(self.out / BEST_WEIGHTS, self.out / LAST, metrics)

    def close(self) -> None:
        if self.run_log is not None:
            self.run_log.close(self.history)
        cleanup(self.dist)
