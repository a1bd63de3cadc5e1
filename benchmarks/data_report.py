"""``mobilekit benchmark-train --data-only``: choose the data, run the data-pipeline benchmark, print and save it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mobilekit.errors import MobilekitError
from mobilekit.paths import shared_dir

PHOTO_REPEATS = 10  # 6 shared photos -> 60 items


def data_table(report: dict) -> Table:
    """One line per pipeline: CPU ms per item, images/s per worker, ratio to the reference, MB per batch."""
    table = Table(title=f"data pipeline at {report['imgsz']} px, {report['items']} items, 1 thread ({report['machine']['cpu_model']})")
    for column in ("pipeline", "CPU ms / item", "images/s / worker", "x reference", "batch MB (dtype)", "batch MB as float32"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    for row in report["rows"]:
        ratio = row["speed_vs_reference"]
        mb = row["batch_bytes"]
        table.add_row(row["pipeline"], f"{row['cpu_ms_per_item']:.2f}", f"{row['images_per_s_per_worker']:.1f}", f"{ratio:.2f}" if ratio else "-",
                      f"{mb['mb']:.1f} ({mb['dtype']})", f"{mb['float32_mb']:.1f}")  # fmt: skip
    return table


def data_benchmark_command(
    data: Path | None, reference_repo: Path | None, imgsz: int, batch: int, workers: list[int], rounds: int, json_out: Path | None
) -> dict:
    """Run the data-pipeline benchmark on ``data`` (default: the shared photos, pseudo-labelled) and write its JSON."""
    from mobilekit.benchmarks.data_pipeline import label_photos, run_data_benchmark
    from mobilekit.benchmarks.hardware import machine_description
    from mobilekit.benchmarks.report import RESULTS_DIR, write_json
    from mobilekit.data.dataset import resolve_label_file

    if reference_repo is not None and not reference_repo.is_dir():
        raise MobilekitError(f"--reference-repo {reference_repo} is not a folder")
    json_path = json_out or RESULTS_DIR / f"data_pipeline_{time.strftime('%Y%m%d-%H%M%S')}.json"
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="mobilekit_data_bench_") as scratch:
        if data is not None:
            label_file = resolve_label_file(data, "train")
            source = str(data)
        else:
            photos = shared_dir() / "images"
            if not photos.is_dir():
                raise MobilekitError(f"no shared photos in {photos}: pass --data DIR (a dataset with label.txt)")
            label_file = label_photos(photos, shared_dir() / "weights" / "retinaface_mnet025_widerface.pth", Path(scratch) / "photos", PHOTO_REPEATS)
            source = f"{photos} x{PHOTO_REPEATS}, pseudo-labelled by retinaface_mnet025 at 640 (conf 0.5)"
        if reference_repo is None:
            console.print("[yellow]no --reference-repo: Pytorch_Retinaface's pipeline is not measured[/]")
        report = run_data_benchmark(label_file, imgsz, rounds, workers, batch, reference_repo)
    report = {"schema": "mobilekit.data_benchmark/1", "machine": machine_description(), "data": source, **report}
    try:
        write_json(report, json_path)
    except OSError as exc:
        raise MobilekitError(f"cannot write --json {json_path}: {exc}") from None
    Console().print(data_table(report))
    for row in report["loaders"]:
        console.print(f"  DataLoader {row['pipeline']}, {row['workers']} workers, batch {row['batch']}: {row['images_per_s']:.1f} images/s")
    console.print(f"report written to {json_path}")
    return report
