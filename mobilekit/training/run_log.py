"""A training run's record: a CSV row and TensorBoard scalars per epoch, PNG curves at the end."""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path

CSV_NAME = "results.csv"
PLOT_NAME = "curves.png"


class RunLog:
    """Writes ``out/results.csv`` (rewritten from the full history, so a resumed run has no
    duplicate epochs), ``out/tensorboard/`` events and ``out/curves.png``."""

    def __init__(self, out_dir: Path, tensorboard: bool = True, start_epoch: int = 0) -> None:
        self.out_dir = out_dir
        self.writer = None
        if tensorboard:
            # Write events with TensorBoard's own stub instead of importing all of TensorFlow (seconds, ~1 GB).
            sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_epoch + 1 if start_epoch else None)

    def epoch(self, history: list[dict]) -> None:
        row = history[-1]
        self._write_csv(history)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def _write_csv(self, history: list[dict]) -> None:
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        path = self.out_dir / CSV_NAME
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in history:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        tmp.replace(path)

    def close(self, history: list[dict]) -> Path | None:
        if self.writer is not None:
            self.writer.close()
        return plot_curves(history, self.out_dir / PLOT_NAME) if history else None


def plot_curves(history: list[dict], path: Path) -> Path:
    """Loss parts, validation AP and learning rate against the epoch, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    losses = [k for k in history[-1] if k.startswith("loss")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in losses:
        axes[0].plot(epochs, [row.get(key, float("nan")) for row in history], label=key)
    axes[0].set_title("training loss")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    val = [(row["epoch"], row["val_ap50"]) for row in history if row.get("val_ap50") is not None]
    if val:
        axes[1].plot(*zip(*val), marker="o")
    axes[1].set_title("validation AP@0.5")
    axes[1].set_ylim(0, 1)
    axes[2].plot(epochs, [row["lr"] for row in history])
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
