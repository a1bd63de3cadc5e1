"""``mobilekit parity``: every exported file vs PyTorch on real images; non-zero exit on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def parity(
    export_dir: Path = typer.Argument(..., help="Folder written by mobilekit export."),
    images: Path = typer.Option(..., "--images", help="Folder of real photos (resized as at inference)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="PyTorch weights (default: the path recorded in the metadata)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full JSON report here (it always goes to EXPORT_DIR/parity.json, where mobilekit package reads it)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a Markdown report (and a PNG error plot next to it)."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for ONNX Runtime and TFLite."),
    arm: Optional[str] = typer.Option(None, "--arm", help="Also run every TFLite file on these emulated ARM64 CPUs, e.g. cortex-a53,neoverse-n1,max (max: i8mm; set up with mobilekit arm-setup)."),
    arm_images: int = typer.Option(3, "--arm-images", min=1, help="--arm: at most this many photos per file (calibration photos last); emulation is 100-1000x slower."),
    arm_cache: Optional[Path] = typer.Option(None, "--arm-cache", help="--arm: the folder mobilekit arm-setup filled (default: $MOBILEKIT_ARM_CACHE, else ~/.cache/mobilekit/arm)."),
) -> None:
    """Compare PyTorch, ONNX Runtime and every TFLite file on the same preprocessed images.

    TFLite runs as apps run it (LiteRT's default XNNPACK delegate, each file in a child process so a crash is that file's FAIL); the built-in kernels' result is reported beside it. Per output group: max/mean abs error, the max error relative to the group's own magnitude, and cosine. Faces, at the app's threshold with a margin: recall (PyTorch's faces >= 0.5 that the file finds at >= 0.3) and precision (the file's faces >= 0.5 that PyTorch finds at >= 0.3), at IoU 0.9 (fp32/fp16) or 0.5 (int8); score drift of found faces.

    fp32 files meet the float criterion: each output group's error relative to its magnitude within 8 * 2^-24 * sum(1 + sqrt(K)) over the layers of its longest path (derived from float32's rounding and the model's graph, docs/float_criterion.md); fp16 needs 100% recall and precision; int8 is judged on photos its calibration did not use. A face judgement over fewer than 3 reference faces is 'not judged', which fails: give photos with faces. Exit status 1 when any file fails.

    The JSON report always goes to EXPORT_DIR/parity.json too: mobilekit package packages only files it passes.

    With --arm, every TFLite file also runs under LiteRT's own aarch64 wheel on each emulated CPU (qemu user mode: XNNPACK picks that CPU's kernels), judged by the same rules, and compared with the x86 run output by output (bit-identical, max LSB, max relative) and face by face; a file passes only when it passes on every CPU.

    Examples:

      mobilekit parity exports/ --images photos/

      mobilekit parity exports/ --images photos/ --json parity.json --report parity.md

      mobilekit arm-setup && mobilekit parity exports/ --images photos/ --arm cortex-a53,neoverse-n1
    """
    from mobilekit.converters.parity import check_artefacts
    from mobilekit.converters.parity_report import export_report_path, write_json, write_markdown, write_plot

    result = check_artefacts(export_dir, images, weights, num_threads=threads, arm=arm_check(arm, arm_images, arm_cache) if arm else None)
    table = Table(title=f"parity vs PyTorch on {len(result['images'])} images ({result['tflite_kernels']})")
    table.add_column("file", overflow="fold")
    for column in ("precision", "worst error / magnitude", "recall", "precision", "max score drift", "result"):
        table.add_column(column)
    for a in result["artefacts"]:
        faces = a["faces"]
        table.add_row(
            a["file"],
            a["precision"],
            f"{max(m['relative'] for m in a['tensors'].values()):.3g}" if a["tensors"] else "-",
            f"{faces['found']}/{faces['faces']}" if faces else "-",
            f"{faces['confirmed']}/{faces['file_faces']}" if faces else "-",
            "-" if not faces or faces["score_drift_max"] is None else f"{faces['score_drift_max']:.3f}",
            "[green]PASS[/]" if a["passed"] else "[bold red]FAIL[/]",
        )
        for on_arm in a.get("arm", []):
            faces = on_arm["faces"]
            table.add_row(
                f"  on emulated {on_arm['cpu']}",
                "",
                f"{max(m['relative'] for m in on_arm['tensors'].values()):.3g}" if on_arm["tensors"] else "-",
                f"{faces['found']}/{faces['faces']}" if faces else "-",
                f"{faces['confirmed']}/{faces['file_faces']}" if faces else "-",
                "-" if not faces or faces["score_drift_max"] is None else f"{faces['score_drift_max']:.3f}",
                "[green]PASS[/]" if on_arm["passed"] else "[bold red]FAIL[/]",
            )
    console = Console()
    console.print(table)
    for a in result["artefacts"]:
        if not a["passed"]:
            console.print(f"{a['file']}: {a['criterion']} -> {a['verdict']}", markup=False, highlight=False)
    write_json(result, export_report_path(export_dir))
    if json_out:
        write_json(result, json_out)
    if report:
        write_markdown(result, report)
        write_plot(result, report.with_suffix(".png"))
    if not result["passed"]:
        failed = [a["file"] for a in result["artefacts"] if not a["passed"]]
        Console(stderr=True).print(f"[bold red]parity failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)


def arm_check(cpus: str, max_images: int, cache_dir: Optional[Path]):
    """The emulated CPUs of --arm, checked against the set-up cache (one line and exit 2 otherwise)."""
    from mobilekit.converters.arm_emulation import ArmCheck, parse_cpus
    from mobilekit.converters.arm_setup import require_ready

    cache = require_ready(cache_dir)
    return ArmCheck(cache, tuple(parse_cpus(cpus, cache)), max_images)


def register(app: typer.Typer) -> None:
    app.command("parity")(parity)
