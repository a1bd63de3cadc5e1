"""The Markdown summary of a device-check report (``gpu_check.md``)."""

from __future__ import annotations

from mobilekit.benchmarks.markdown import table


def _num(value, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def _status(row: dict) -> str:
    return "ok" if row["status"] == "ok" else f"{row['status']}: {str(row.get('reason', ''))[:120]}"


def _training(section: dict) -> list[str]:
    header = ["model", "batch", "mode", "batch used", "steps/s", "images/s", "step ms (median)", "first step s", "peak MB", "status"]
    rows = [[r["model"], r["batch_option"], r["mode"], r.get("batch", "-"), _num(r.get("steps_per_s"), 2), _num(r.get("images_per_s")),
             _num(r.get("step_ms", {}).get("median_ms")), _num(r.get("first_step_s")), _num(r.get("memory", {}).get("peak_mb"), 0), _status(r)]
            for r in section.get("rows", [])]  # fmt: skip
    return table(header, rows, "lllrrrrrrl")


def _inference(section: dict) -> list[str]:
    header = ["model", "backend", "precision", "batch", "median ms", "images/s", "provider used", "status"]
    rows = [[r["model"], r["backend"], r.get("precision", "-"), r.get("batch", "-"), _num(r.get("latency_ms", {}).get("median_ms"), 2),
             _num(r.get("images_per_s")), r.get("provider_used", "-"), _status(r)]
            for r in section.get("rows", [])]  # fmt: skip
    return table(header, rows, "lllrrrll")


def _data(section: dict) -> list[str]:
    rows = [[r["mode"], r["workers"], _num(r.get("images_per_s")), _status(r)] for r in section.get("rows", [])]
    return table(["augmentation", "workers", "images/s", "status"], rows, "lrrl")


def markdown(report: dict) -> str:
    """Status per section, then one table per section and the GPU- or input-bound verdict."""
    s = report["sections"]
    env = s.get("environment", {})
    machine = env.get("machine", {})
    cuda = env.get("cuda", {})
    lines = [f"# mobilekit device check{' (CPU dry run)' if report['dry_run'] else ''}", "",
             f"{report['started_utc']}, {cuda.get('device') or machine.get('cpu_model', '?')}, {machine.get('usable_cores', '?')} CPU cores, "
             f"torch {env.get('torch', '?')}, {report.get('total_seconds', '?')} s in all. Failed: {', '.join(report.get('failed_sections', [])) or 'none'}.", ""]  # fmt: skip
    lines += table(["section", "status", "seconds"], [[name, _status(sec), f"{sec['seconds']:.0f}"] for name, sec in s.items()], "llr")
    lines += ["", f"Optional packages: {env.get('optional_packages', {})}; ONNX Runtime providers: {env.get('onnxruntime_providers', 'none')}.", ""]
    lines += ["## Training throughput", ""] + _training(s.get("training", {}))
    ddp = s.get("ddp", {})
    lines += ["", "## DDP (torchrun, 1 process, DDP kept on)", "",
              f"{_status(ddp)}: backend {ddp.get('backend', '-')}, plain losses {ddp.get('plain_losses', '-')}, DDP losses {ddp.get('ddp_losses', '-')}, "
              f"max relative difference {ddp.get('max_relative_difference', '-')} (tolerance {ddp.get('tolerance', '-')})."]  # fmt: skip
    te = s.get("train_eval", {})
    epochs = te.get("epochs", [])
    ap = te.get("eval", {}).get("metrics", {}).get("ap50")
    lines += ["", "## featherface_v1: 2 epochs, then mobilekit eval", "",
              f"{_status(te)}: train {_num(te.get('train', {}).get('seconds'))} s, images/s per epoch {[round(e.get('images_per_s', 0), 1) for e in epochs]}, "
              f"eval {_num(te.get('eval', {}).get('seconds'))} s, AP50 {_num(ap, 3)}."]  # fmt: skip
    lines += ["", "## Inference latency", ""] + _inference(s.get("inference", {}))
    lines += ["", "## Data pipeline alone", "", s.get("data_pipeline", {}).get("data", ""), ""] + _data(s.get("data_pipeline", {}))
    verdict = [[v["model"], _num(v["train_images_per_s"]), f"{_num(v['loader_images_per_s'])} ({v['loader_workers']})", v["limited_by"]] for v in report.get("verdict", [])]
    lines += ["", "## Which side limits training", ""] + table(["model", "training images/s", "data loader images/s (workers)", "limited by"], verdict, "lrrl")
    return "\n".join(lines) + "\n"
