"""Presenting a benchmark report: a rich table, a JSON file and a PNG chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mobilekit.atomic import write_json_atomic

RESULTS_DIR = Path("benchmarks") / "results"  # default folder of the reports, under the working directory

COLUMNS = ("model", "backend", "provider used", "thr", "size", "median ms", "p90", "p99", "mean +- std", "FPS", "CPU ms", "e2e median ms", "e2e FPS", "file MB", "peak RSS MB", "GMACs", "GFLOP/s", "% peak", "dets")
TABLE_WIDTH = 230


def _ms(stats: dict | None, key: str) -> str:
    return f"{stats[key]:.2f}" if stats else "-"


def results_table(report: dict) -> Table:
    """One line per row: latency statistics, FPS, size, memory, MACs and achieved fraction of peak."""
    table = Table(title=f"mobilekit benchmark - {report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores", show_lines=False)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("model", "backend", "provider used") else "right", overflow="fold")
    for row in report["rows"]:
        size = "x".join(str(v) for v in row["imgsz"])
        file_mb = f"{row['file_bytes'] / 2**20:.2f}" if row.get("file_bytes") else "-"
        gmacs = f"{row['macs'] / 1e9:.2f}" if row.get("macs") else "-"
        if row["status"] != "ok":
            table.add_row(row["model"], row["label"], f"[yellow]{row['status']}: {row['reason']}[/]", str(row["threads"]), size, *["-"] * 8, file_mb, "-", gmacs, "-", "-", "-")
            continue
        m, e = row["model_only"], row["end_to_end"]
        memory = row.get("memory") or {}
        fraction = row.get("fraction_of_peak")
        table.add_row(
            row["model"],
            row["label"],
            row["provider_used"],
            str(row["threads"]),
            size,
            _ms(m, "median_ms"),
            _ms(m, "p90_ms"),
            _ms(m, "p99_ms"),
            f"{m['mean_ms']:.2f} +- {m['std_ms']:.2f}",
            f"{m['fps']:.1f}",
            _ms(m, "cpu_median_ms") if m.get("cpu_median_ms") is not None else "-",
            _ms(e, "median_ms"),
            f"{e['fps']:.1f}",
            file_mb,
            f"{memory['peak_rss_mb']:.0f}" if memory else "-",
            gmacs,
            f"{row['achieved_gflops']:.1f}",
            f"{100 * fraction:.1f}" if fraction is not None else "-",
            str(row["detections"]),
        )
    return table


def print_report(report: dict, console: Console | None = None) -> None:
    console = console or Console(width=None if sys.stdout.isatty() else TABLE_WIDTH)
    console.print(results_table(report))
    peaks = ", ".join(f"{t} thr: numpy {p['numpy_gflops']} / torch {p['torch_gflops']}" for t, p in report["matmul_peak"].items())
    if peaks:
        console.print(f"fp32 matmul peak GFLOP/s ({peaks}); load average at start {report['machine']['load_average_1_5_15']}")


def write_json(report: dict, path: str | Path) -> Path:
    return write_json_atomic(path, report)


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def plot_report(report: dict, path: str | Path) -> Path:
    """Horizontal bars per row: model-only and end-to-end median latency (ms), with p90 whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["status"] == "ok"]
    labels = [f"{r['model']} {r['label']} {'x'.join(map(str, r['imgsz']))} t{r['threads']}" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.35 * max(1, len(rows))))
    positions = range(len(rows))
    model = [r["model_only"]["median_ms"] for r in rows]
    e2e = [r["end_to_end"]["median_ms"] for r in rows]
    model_err = [r["model_only"]["p90_ms"] - r["model_only"]["median_ms"] for r in rows]
    e2e_err = [r["end_to_end"]["p90_ms"] - r["end_to_end"]["median_ms"] for r in rows]
    ax.barh([p + 0.2 for p in positions], model, height=0.4, xerr=[[0] * len(rows), model_err], label="model only")
    ax.barh([p - 0.2 for p in positions], e2e, height=0.4, xerr=[[0] * len(rows), e2e_err], label="end to end (pre + model + decode/NMS)")
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median latency, ms (whisker: p90)")
    machine = report["machine"]
    ax.set_title(f"{machine['cpu_model']} ({machine['usable_cores']} cores), {machine['date_utc']}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
