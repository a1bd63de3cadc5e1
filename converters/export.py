"""``export_model``: one call from a PyTorch detector to ONNX, simplified ONNX and TFLite files + sidecars."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from mobilekit.atomic import write_json_atomic
from mobilekit.converters.activation_ranges import DEFAULT_RANGE_ESTIMATOR, RANGE_ESTIMATORS
from mobilekit.converters.calibration import calibration_paths, load_calibration_images, synthetic_sample
from mobilekit.converters.litert_export import LITERT_EXTRA, LitertConversionFailed, convert_with_litert, litert_available, require_litert
from mobilekit.converters.onnx_export import INPUT_NAME, check_onnx, export_onnx, prepare_deploy_module, simplify_onnx
from mobilekit.converters.sidecars import SIDECAR_SCHEMA, artefact_stem, sha256_file, sidecar_path, tool_versions
from mobilekit.converters.tflite_export import convert_to_tflite
from mobilekit.converters.variants import FORMATS, INT8_VARIANTS, TFLITE_CONVERTERS, TFLITE_KINDS, TFLITE_VARIANTS, VARIANT, artefact_path, converter_variant
from mobilekit.errors import MobilekitError
from mobilekit.families import family_of
from mobilekit.models import FaceDetector

DEFAULT_FORMATS = ("onnx", "onnx_sim", "fp32", "fp16")
CONVERTER_CHOICES = (*TFLITE_CONVERTERS, "both")
LITERT_INT8_NOTE = (
    "int8 and int8_full come from onnx2tf: litert-torch's post-training int8 (ai-edge-quantizer) makes int8 "
    "input tensors, not the float32 / uint8 contract"
)


def resolve_formats(
    onnx: bool = False, simplify: bool = False, tflite: bool = False, fp16: bool = False, int8: bool = False, converter: str = "onnx2tf"
) -> tuple[str, ...]:
    """CLI flags -> formats. No flag: ONNX, simplified ONNX, TFLite fp32+fp16. TFLite implies the ONNX steps;
    ``--fp16``/``--int8`` imply ``--tflite``; ``--int8`` adds the int8 and full-integer variants.
    ``converter`` (``onnx2tf``, ``litert`` or ``both``) picks who writes each TFLite variant; a variant
    litert-torch does not write (int8) stays onnx2tf's."""
    if converter not in CONVERTER_CHOICES:
        raise MobilekitError(f"--converter {converter!r} is not one of {', '.join(CONVERTER_CHOICES)}")
    if not any((onnx, simplify, tflite, fp16, int8)):
        formats = list(DEFAULT_FORMATS)
    else:
        tflite = tflite or fp16 or int8
        formats = ["onnx"]
        if simplify or tflite:
            formats.append("onnx_sim")
        if tflite:
            formats += ["fp32", "fp16"]
        if int8:
            formats += INT8_VARIANTS
    converters = TFLITE_CONVERTERS if converter == "both" else (converter,)
    resolved = [f for f in formats if f not in TFLITE_KINDS]
    for kind in (f for f in formats if f in TFLITE_KINDS):
        written = [v for c in converters if (v := converter_variant(kind, c))]
        resolved += written or [kind]
    return tuple(resolved)


def installed_formats(formats: Iterable[str]) -> tuple[tuple[str, ...], str | None]:
    """``formats`` without those of an optional converter that is not installed (litert-torch, the ``litert``
    extra), and one line saying what was skipped and the command that adds it (None when nothing was)."""
    formats = tuple(formats)
    skipped = [f for f in formats if VARIANT[f].converter == "litert"] if not litert_available() else []
    if not skipped:
        return formats, None
    kept = tuple(f for f in formats if f not in skipped)
    return kept, f"skipped {', '.join(skipped)}: litert-torch is not installed ({LITERT_EXTRA})"


def _drop_unusable_uint8(formats: tuple[str, ...], deploy, warn: Callable[[str], None] | None) -> tuple[str, ...]:
    """``formats`` without the uint8-output variants when ``deploy``'s family declares them unusable
    (``uint8_outputs_unusable``); ``warn`` gets the one-line reason."""
    reason = family_of(deploy).uint8_outputs_unusable
    dropped = [f for f in formats if VARIANT[f].input_dtype == "uint8"]
    if not reason or not dropped:
        return formats
    if warn is not None:
        warn(f"{', '.join(dropped)} not written for {deploy.name}: {reason}")
    return tuple(f for f in formats if f not in dropped)


def check_input_size(input_hw: tuple[int, int], deploy) -> None:
    height, width = input_hw
    stride = deploy.max_stride
    if height < stride or width < stride or height % stride or width % stride:
        raise MobilekitError(f"input size {height}x{width} is not supported by {deploy.name}: height and width must be positive multiples of {stride}")


def check_output_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write_probe_"):
            pass
    except OSError as exc:
        raise MobilekitError(f"output folder {out_dir} is not writable: {exc.strerror or exc}") from None


def export_model(
    model: FaceDetector,
    imgsz: int | tuple[int, int],
    out_dir: str | Path,
    formats: Iterable[str] = DEFAULT_FORMATS,
    calib_images: str | Path | None = None,
    calib_count: int = 200,
    opset: int = 17,
    dynamic: bool = False,
    source: dict | None = None,
    keep_float: tuple[str, ...] | None = None,
    calib_ranges: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Export ``model`` at ``imgsz`` (int or (H, W)) to ``out_dir``; returns the artefact paths (sidecars next to them).

    ``formats`` from :data:`FORMATS`; onnx2tf's TFLite variants are converted from the simplified ONNX
    when onnxsim succeeded, otherwise from the plain one; litert's from the PyTorch module. When
    litert-torch cannot convert the model, its variants are converted by onnx2tf instead and ``warn``
    (if given) gets the one-line reason, which every sidecar's notes also keep. ``source`` is recorded
    in every sidecar (see ``model_source.source_metadata``) so parity can rebuild the PyTorch reference.
    int8 variants keep ``keep_float`` layers in float (None: the model's declared ``int8_keep_float``;
    see ``selective_int8``), with activation ranges from the ``calib_ranges`` estimator (None: the
    default; see ``activation_ranges``).

    Every file is written into a staging folder inside ``out_dir`` and moved into ``out_dir`` only when
    the whole export succeeded (each TFLite file loads under LiteRT's XNNPACK delegate first): an export
    that fails writes nothing and leaves earlier files in place.
    """
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise MobilekitError(f"unknown export format(s) {unknown}; choose from {FORMATS}")
    calib_ranges = calib_ranges or DEFAULT_RANGE_ESTIMATOR
    if calib_ranges not in RANGE_ESTIMATORS:
        raise MobilekitError(f"--calib-ranges {calib_ranges!r} is not one of {', '.join(RANGE_ESTIMATORS)}")
    input_hw = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    deploy = model.deploy
    check_input_size(input_hw, deploy)
    formats = _drop_unusable_uint8(formats, deploy, warn)
    out_dir = Path(out_dir).resolve()  # the TFLite worker runs in its own folder
    check_output_dir(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=".export.", suffix=".partial", dir=out_dir))
    try:
        written = _write_files(model, input_hw, staging, formats, calib_images, calib_count, opset, dynamic, source, keep_float, calib_ranges, warn)
        return [_publish(path, out_dir) for path in written]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(path: Path, out_dir: Path) -> Path:
    """Move a staged artefact into ``out_dir``, then its sidecar; returns its final path."""
    final = out_dir / path.name
    os.replace(path, final)
    os.replace(sidecar_path(path), sidecar_path(final))
    return final


def _write_files(
    model: FaceDetector, input_hw: tuple[int, int], out_dir: Path, formats: tuple[str, ...], calib_images, calib_count: int, opset: int,
    dynamic: bool, source: dict | None, keep_float: tuple[str, ...] | None, calib_ranges: str, warn: Callable[[str], None] | None,
) -> list[Path]:  # fmt: skip
    """:func:`export_model`'s files and sidecars, written into ``out_dir`` (its staging folder)."""
    deploy = model.deploy
    litert_variants = tuple(v for v in TFLITE_VARIANTS if v in formats and VARIANT[v].converter == "litert")
    variants = tuple(v for v in TFLITE_VARIANTS if v in formats and VARIANT[v].converter == "onnx2tf")
    if litert_variants:
        require_litert()
    calibration, calib_paths = None, []
    if any(v in INT8_VARIANTS for v in variants):
        if calib_images is None:
            raise MobilekitError("--int8 needs --calib-images DIR (real photos, resized as at inference)")
        calib_paths = calibration_paths(calib_images, calib_count)
        calibration = load_calibration_images(calib_paths, deploy, input_hw)

    stem = artefact_stem(deploy.name, input_hw)
    common = _common_metadata(model, input_hw, source or {}, calib_paths, calib_images)
    deploy_module = prepare_deploy_module(model)
    written: list[Path] = []
    sample = calibration[:1] if calibration is not None else synthetic_sample(input_hw)

    def finish(path: Path, fmt: str, variant: str, seconds: float, extra: dict) -> None:
        written.append(_finish(path, deploy, common, fmt, variant, seconds, extra))

    litert_converted: dict[str, dict] = {}
    if litert_variants:
        if any(v in INT8_VARIANTS for v in variants):
            common["notes"].append(LITERT_INT8_NOTE)
        try:
            litert_converted = convert_with_litert(deploy_module, out_dir, stem, litert_variants, sample)
        except LitertConversionFailed as exc:
            fallback = [VARIANT[v].kind for v in litert_variants if VARIANT[v].kind not in variants]
            message = f"{exc}; {', '.join(fallback) or 'these variants'} converted with onnx2tf only"
            common["notes"].append(message)
            if warn is not None:
                warn(message)
            variants = tuple(v for v in TFLITE_VARIANTS if v in variants or v in fallback)

    with tempfile.TemporaryDirectory(prefix="mobilekit_export_") as scratch_name:
        scratch = Path(scratch_name)
        onnx_path = artefact_path(out_dir if "onnx" in formats else scratch, stem, "onnx")
        start = time.perf_counter()
        onnx_summary = export_onnx(deploy_module, input_hw, onnx_path, opset, dynamic=dynamic)
        if "onnx" in formats:
            finish(onnx_path, "onnx", "onnx", time.perf_counter() - start, {"onnx": onnx_summary, "dynamic_hw": dynamic})
        sim_ok = False
        if "onnx_sim" in formats or variants:
            sim_path = artefact_path(out_dir if "onnx_sim" in formats else scratch, stem, "onnx_sim")
            start = time.perf_counter()
            sim_ok, message = simplify_onnx(onnx_path, sim_path)
            common["notes"].append(message)
            if sim_ok and "onnx_sim" in formats:
                extra = {"onnx": check_onnx(sim_path), "simplify": message, "dynamic_hw": dynamic}
                finish(sim_path, "onnx", "onnx_sim", time.perf_counter() - start, extra)
        tflite_source = sim_path if sim_ok else onnx_path
        if variants and dynamic:  # TFLite needs static shapes: convert from a static twin
            tflite_source = scratch / f"{stem}_static.onnx"
            export_onnx(deploy_module, input_hw, tflite_source, opset)
            if simplify_onnx(tflite_source, scratch / f"{stem}_static_sim.onnx")[0]:
                tflite_source = scratch / f"{stem}_static_sim.onnx"

        if variants:
            keep = deploy.int8_keep_float if keep_float is None else tuple(keep_float)
            converted = convert_to_tflite(tflite_source, out_dir, stem, variants, sample, calibration, keep, deploy.to_dict(), calib_ranges)
            for variant in variants:
                info = converted[variant]
                seconds = info["onnx2tf_seconds"] + info["calibration_seconds"] + info["convert_seconds"]
                extra = {
                    "tflite": {
                        "variant": variant,
                        "converter": "onnx2tf",
                        "description": VARIANT[variant].description,
                        "converted_from": tflite_source.name,
                        "signature": "serving_default",
                        "io": info["io"],
                        "output_mapping": info["output_mapping"],
                        "converter_notes": info["notes"],
                        "keep_float": info["keep_float"],
                        "calibration_ranges": info["calibration_ranges"],
                        "analysis": info["analysis"],
                        "seconds": {
                            "onnx2tf_shared": info["onnx2tf_seconds"],
                            "int8_calibration_shared": info["calibration_seconds"],
                            "tflite_converter": info["convert_seconds"],
                        },
                    }
                }
                finish(info["path"], "tflite", variant, seconds, extra)
    for variant, info in litert_converted.items():
        finish(info["path"], "tflite", variant, info["fp32_seconds"] + info["convert_seconds"], _litert_extra(variant, info))
    return written


def _litert_extra(variant: str, info: dict) -> dict:
    """The ``tflite`` block of a litert file's sidecar (same keys as onnx2tf's where they mean the same)."""
    return {
        "tflite": {
            "variant": variant,
            "converter": "litert",
            "description": VARIANT[variant].description,
            "converted_from": "the PyTorch deploy module (torch.export, NHWC wrapper), not the ONNX file",
            "signature": "serving_default",
            "io": info["io"],
            "output_check": {name: {"max_abs_error_vs_pytorch": err} for name, err in info["max_abs_error_vs_pytorch"].items()},
            "converter_notes": [],
            "analysis": info["analysis"],
            "seconds": {"litert_fp32_shared": info["fp32_seconds"], "tflite_converter": info["convert_seconds"]},
        }
    }


def _common_metadata(model: FaceDetector, input_hw, source: dict, calib_paths: list[Path], calib_images) -> dict:
    deploy = model.deploy
    return {
        "model": {
            "name": deploy.name,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            **source,
        },
        "input_hw": list(input_hw),
        "anchors": family_of(deploy).anchors(deploy),
        "deploy": deploy.to_dict(),
        "calibration": None
        if not calib_paths
        else {
            "folder": str(Path(calib_images).resolve()),
            "images": len(calib_paths),
            "files": [p.name for p in calib_paths],
            "images_sha256": [sha256_file(p) for p in calib_paths],  # parity judges int8 on other photos
            "resize": deploy.resize,
        },
        "versions": tool_versions(),
        "notes": [],
    }


def _input_spec(fmt: str, input_hw, extra: dict, deploy) -> dict:
    height, width = input_hw
    dynamic = extra.get("dynamic_hw", False)
    if fmt == "onnx":
        shape = [1, 3, "height" if dynamic else height, "width" if dynamic else width]
        dtype, layout, name = "float32", "NCHW", INPUT_NAME
    else:
        io_inputs = extra["tflite"]["io"]["inputs"]
        name, spec = next(iter(io_inputs.items()))
        shape, dtype, layout = spec["shape"], spec["dtype"], "NHWC"
    spec = {
        "name": name,
        "shape": shape,
        "dtype": dtype,
        "layout": layout,
        "channel_order": "RGB",
        "value_range": [0, 255],
        "preprocessing": f"none outside the graph: raw pixels; resize '{deploy.resize}' to {height}x{width} (pad {deploy.pad_value})",
    }
    if fmt == "tflite" and dtype != "float32":
        spec["quantization"] = extra["tflite"]["io"]["inputs"][name]["quantization"]
    return spec


def _output_specs(fmt: str, extra: dict, deploy) -> list[dict]:
    specs = []
    for name in deploy.output_names:
        spec = {"name": name, "meaning": family_of(deploy).output_meanings.get(name, "")}
        if fmt == "onnx":
            spec.update(shape=extra["onnx"]["outputs"][name], dtype="float32")
        else:
            io = extra["tflite"]["io"]["outputs"][name]
            spec.update(shape=io["shape"], dtype=io["dtype"])
            if io["dtype"] != "float32":
                spec["quantization"] = io["quantization"]
        specs.append(spec)
    return specs


def _finish(path: Path, deploy, common: dict, fmt: str, variant: str, seconds: float, extra: dict) -> Path:
    """Write the sidecar of a finished artefact (the artefact is already under its final name)."""
    input_hw = tuple(common["input_hw"])
    meta = {
        "schema": SIDECAR_SCHEMA,
        "artefact": {
            "file": path.name,
            "format": fmt,
            "variant": variant,
            "converter": VARIANT[variant].converter,
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "export_seconds": round(seconds, 3),
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "input": _input_spec(fmt, input_hw, extra, deploy),
        "outputs": _output_specs(fmt, extra, deploy),
        **{k: v for k, v in common.items() if k != "notes"},
        **extra,
        "notes": list(common["notes"]),
    }
    write_json_atomic(sidecar_path(path), meta)
    return path
