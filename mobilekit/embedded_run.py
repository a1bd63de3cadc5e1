"""The embedded default, end to end: data -> train -> evaluate -> export -> parity -> benchmark -> package.

Every step reuses the library (no second implementation of anything) and is re-runnable: data and
training resume from what is on disk, exports and packages are replaced atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mobilekit.atomic import write_json_atomic
from mobilekit.errors import MobilekitError


@dataclass
class PipelineConfig:
    model: str = "featherface_v1"
    out: Path = Path("runs/default")
    data: Path | None = None  # None: a synthetic dataset is made in out/data
    train_config: Path | None = None  # YAML with training settings (overridden by the fields below)
    synth_images: int = 300
    imgsz: int = 256  # synthetic data, training, evaluation and export size (BlazeFace: its own size but for the data)
    epochs: int = 6
    pretrained_backbone: Path | None = None  # default: the ImageNet MobileNetV1-0.25 shipped with mobilekit (mobilekit.package_data)
    device: str = "auto"
    seed: int = 0
    calib_count: int = 32  # int8 calibration photos, from train/: parity then judges int8 on val/ photos it never saw
    flutter_out: Path | None = None  # default: flutter_assets/<model>
    fresh: bool = False


def model_input_size(model: str, imgsz: int) -> int:
    """The size the model trains, evaluates and exports at: ``imgsz``, or its own input size where its family
    works at that size only (BlazeFace)."""
    from mobilekit.families import family_of
    from mobilekit.models import create_model

    deploy = create_model(model).deploy
    return deploy.input_size[0] if family_of(deploy).native_input_only else imgsz


@dataclass
class StepResult:
    name: str
    seconds: float
    summary: str
    path: str
    ok: bool = True  # False: the step failed and the run stops after it
    details: dict = field(default_factory=dict)
    ran: bool = True  # False: an earlier step failed, this one was not run


class Pipeline:
    def __init__(self, cfg: PipelineConfig, console: Console | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console()
        self.out = Path(cfg.out)
        self.data = Path(cfg.data) if cfg.data else self.out / "data"
        self.train_dir = self.out / "train"
        self.export_dir = self.out / "export"
        self.flutter_out = Path(cfg.flutter_out) if cfg.flutter_out else Path("flutter_assets") / cfg.model
        self.results: list[StepResult] = []
        self.weights: Path | None = None
        self.model_imgsz = model_input_size(cfg.model, cfg.imgsz)

    # -- steps ----------------------------------------------------------------------------------
    def make_data(self) -> StepResult:
        from mobilekit.data.synth import make_synthetic_dataset

        if self.cfg.data:
            for split in ("train", "val"):
                if not (self.data / split / "label.txt").is_file():
                    raise MobilekitError(f"--data {self.data} has no {split}/label.txt (expected the RetinaFace layout)")
            return StepResult("data", 0.0, "user dataset", str(self.data))
        done = self.data / ".complete"
        if done.is_file() and done.read_text() == self._data_signature():
            return StepResult("data", 0.0, "synthetic dataset already present (reused)", str(self.data))
        make_synthetic_dataset(self.data, self.cfg.synth_images, seed=self.cfg.seed, imgsz=self.cfg.imgsz)
        done.write_text(self._data_signature())
        return StepResult("data", 0.0, f"{self.cfg.synth_images} synthetic images ({self.cfg.imgsz} px)", str(self.data))

    def _data_signature(self) -> str:
        return json.dumps({"images": self.cfg.synth_images, "seed": self.cfg.seed, "imgsz": self.cfg.imgsz})

    def train(self) -> StepResult:
        from mobilekit.training.config import load_config
        from mobilekit.training.loop import LAST, train

        overrides = {
            "model": self.cfg.model,
            "data": str(self.data),
            "out": str(self.train_dir),
            "imgsz": self.model_imgsz,
            "epochs": self.cfg.epochs,
            "device": self.cfg.device,
            "seed": self.cfg.seed,
        }
        backbone = self._pretrained_backbone()
        if backbone is not None:
            overrides["pretrained_backbone"] = str(backbone)
        if (self.train_dir / LAST).is_file():
            overrides["resume"] = str(self.train_dir / LAST)
        result = train(load_config(self.cfg.train_config, overrides))
        self.weights = result.best_weights
        ap = result.metrics.get("best_val_ap50")
        summary = f"{result.metrics['epochs']} epochs, best val AP50 {ap:.3f}" if ap is not None else f"{result.metrics['epochs']} epochs"
        return StepResult("train", 0.0, summary, str(result.best_weights), details={k: v for k, v in result.metrics.items() if k != "history"})

    def _pretrained_backbone(self) -> Path | None:
        """``--pretrained-backbone``, else the ImageNet MobileNetV1-0.25 shipped with mobilekit where the model
        has that backbone; None: the model trains from scratch."""
        from mobilekit.models import create_model
        from mobilekit.package_data import IMAGENET_BACKBONE, shipped_path

        if self.cfg.pretrained_backbone is not None:
            return Path(self.cfg.pretrained_backbone)
        if create_model(self.cfg.model).backbone_module() is None:
            return None
        return shipped_path(IMAGENET_BACKBONE)

    def evaluate(self) -> StepResult:
        from mobilekit.evaluation.ap import evaluate_dataset
        from mobilekit.inference import load_model

        model = load_model(self.cfg.model, self.weights)
        metrics = evaluate_dataset(model, self.data, "val", self.model_imgsz)
        write_json_atomic(self.out / "eval.json", metrics)
        summary = f"val AP50 {metrics['ap50']:.3f}, recall {metrics['recall']:.3f} on {metrics['images']} images"
        return StepResult("evaluate", 0.0, summary, str(self.out / "eval.json"), details=metrics)

    def export(self) -> StepResult:
        from mobilekit.converters.export import FORMATS, export_model, installed_formats
        from mobilekit.converters.model_source import build_source_model, source_metadata

        formats, skipped = installed_formats(FORMATS)
        if skipped:
            self.console.print(f"[yellow]export: {escape(skipped)}[/]")
        model = build_source_model(self.cfg.model, self.weights)
        paths = export_model(
            model,
            self.model_imgsz,
            self.export_dir,
            formats=formats,
            calib_images=self.data / "train" / "images",
            calib_count=self.cfg.calib_count,
            source=source_metadata(self.weights, None, self.cfg.model),
        )
        summary = ", ".join(p.name for p in paths) + (f"; {skipped}" if skipped else "")
        return StepResult("export", 0.0, summary, str(self.export_dir), details={"skipped": skipped} if skipped else {})

    def parity(self) -> StepResult:
        from mobilekit.converters.parity import check_artefacts
        from mobilekit.converters.parity_report import export_report_path, write_json, write_markdown, write_plot

        report = check_artefacts(self.export_dir, self.data / "val" / "images", self.weights)
        write_json(report, export_report_path(self.export_dir))  # where package finds the verdicts
        write_markdown(report, self.out / "parity.md")
        write_plot(report, self.out / "parity.png")
        failed = [a for a in report["artefacts"] if not a["passed"]]
        # What is packaged (fp32) and fp16 must pass; an int8 shortfall is reported, not fatal.
        blocking = [a["file"] for a in failed if a["precision"] != "int8"]
        summary = f"{len(report['artefacts']) - len(failed)}/{len(report['artefacts'])} artefacts pass"
        if failed:
            summary += f" (below threshold: {', '.join(a['file'] for a in failed)})"
            for a in failed:
                self.console.print(f"[yellow]parity: {a['file']}: {a['verdict']}[/]")
        return StepResult("parity", 0.0, summary, str(self.out / "parity.md"), ok=not blocking)

    def benchmark(self) -> StepResult:
        from mobilekit.benchmarks.cases import plan_cases
        from mobilekit.benchmarks.report import plot_report, print_report, write_json
        from mobilekit.benchmarks.suite import run_suite
        from mobilekit.timing import TimingConfig

        cases = plan_cases([str(self.export_dir)], [(self.model_imgsz, self.model_imgsz)], [2], backends=("torch", "onnxruntime", "tflite"))
        image = sorted((self.data / "val" / "images").iterdir())[0]
        report = run_suite(cases, TimingConfig(warmup=2, runs=10, min_seconds=0.5), image, isolate=False)
        write_json(report, self.out / "benchmark.json")
        plot_report(report, self.out / "benchmark.png")
        print_report(report, self.console)
        measured = [r for r in report["rows"] if r.get("status") == "ok"]
        fastest = min(measured, key=lambda r: r["model_only"]["median_ms"], default=None)
        summary = f"{len(measured)} backends; fastest {fastest['label']} {fastest['model_only']['median_ms']:.1f} ms" if fastest else "nothing measured"
        return StepResult("benchmark", 0.0, summary, str(self.out / "benchmark.json"))

    def package(self) -> StepResult:
        from mobilekit.flutter.package import package_export

        folder = package_export(self.export_dir, self.flutter_out, "fp32")
        return StepResult("package", 0.0, "model.tflite, model_meta.json, anchors.json, golden/, lib/", str(folder))

    # -- driver ---------------------------------------------------------------------------------
    def steps(self) -> list[tuple[str, Callable[[], StepResult]]]:
        return [
            ("make data", self.make_data),
            ("train", self.train),
            ("evaluate", self.evaluate),
            ("export", self.export),
            ("parity", self.parity),
            ("benchmark", self.benchmark),
            ("package", self.package),
        ]

    def run(self) -> list[StepResult]:
        """Every step in order, stopping after the first that fails (``ok`` False) or raises; the steps
        after it are listed as not run. The summary (table, ``summary.json``) is written either way; an
        exception is raised again after it."""
        if self.cfg.fresh and self.out.exists():
            import shutil

            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        steps = self.steps()
        total_start = time.perf_counter()
        error: Exception | None = None
        for index, (title, step) in enumerate(steps, 1):
            if error is not None or (self.results and not self.results[-1].ok):
                self.results.append(StepResult(title, 0.0, "not run: an earlier step failed", "", ok=False, ran=False))
                continue
            self.console.rule(f"[bold]step {index}/{len(steps)}: {title}")
            start = time.perf_counter()
            try:
                result = step()
            except Exception as exc:  # recorded in the summary, raised again below
                error, result = exc, StepResult(title, 0.0, f"error: {exc}", "", ok=False)
            result.seconds = time.perf_counter() - start
            self.results.append(result)
            state = "[green]done[/]" if result.ok else "[bold red]FAILED[/]"
            self.console.print(f"{state} {title} in {result.seconds:.0f} s: {escape(result.summary)}", highlight=False)
        summary = {"total_seconds": time.perf_counter() - total_start, "steps": [asdict(r) for r in self.results]}
        write_json_atomic(self.out / "summary.json", summary)
        self.console.print(self.table(summary["total_seconds"]))
        if error is not None:
            raise error
        return self.results

    def table(self, total_seconds: float) -> Table:
        table = Table(title=f"mobilekit run: {self.cfg.model} ({total_seconds / 60:.1f} min)")
        for column in ("step", "time", "result", "where"):
            table.add_column(column)
        for r in self.results:
            if not r.ran:
                table.add_row(r.name, "-", f"[dim]{escape(r.summary)}[/]", "")
            else:
                table.add_row(r.name, f"{r.seconds:.0f} s", escape(r.summary) if r.ok else f"[red]{escape(r.summary)}[/]", r.path)
        return table
