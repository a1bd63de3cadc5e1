"""What to benchmark: targets (export folders, export files or model names) -> a list of cases."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mobilekit.converters.model_source import source_model_name
from mobilekit.converters.variants import VARIANT, parse_artefact_name
from mobilekit.errors import MobilekitError
from mobilekit.models import list_models
from mobilekit.models.registry import is_model_file
from mobilekit.paths import shared_dir

TORCH_CPU_MODES = ("torch", "torch_channels_last", "torch_compile")


@dataclass(frozen=True)
class Case:
    """One measurement: a model in one format on one backend, provider, thread count and input size."""

    model: str
    backend: str  # torch | torch_channels_last | torch_compile | torch_fp16 | onnxruntime | tflite
    variant: str  # pytorch | onnx | onnx_sim | fp32 | fp16 | int8 | int8_full
    path: str | None  # the exported file; for PyTorch the weights (None: random init)
    imgsz: tuple[int, int]
    threads: int
    device: str = "cpu"
    provider: str = "cpu"  # requested: cpu | cuda | tensorrt | xnnpack | builtin
    precision: str = "fp32"
    random_seed: int | None = None
    unavailable: str | None = None  # known before measuring, e.g. the on-the-fly ONNX export failed

    @property
    def label(self) -> str:
        name = self.backend if self.variant == "pytorch" else f"{self.backend}:{self.variant}"
        if self.provider not in ("cpu", "xnnpack"):
            name += f"[{self.provider}]"
        return name

    def to_dict(self) -> dict:
        return {**asdict(self), "imgsz": list(self.imgsz), "label": self.label}

    @classmethod
    def from_dict(cls, data: dict) -> "Case":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "imgsz": tuple(fields["imgsz"])})


@dataclass(frozen=True)
class Artefact:
    """An exported file with what the benchmark needs from its sidecar (or its name)."""

    path: Path
    model: str
    variant: str
    imgsz: tuple[int, int] | None  # None: dynamic height/width
    weights: str | None
    random_seed: int | None

    @property
    def format(self) -> str:
        return "onnx" if self.path.suffix == ".onnx" else "tflite"


def _artefact_from_sidecar(path: Path, meta: dict) -> Artefact:
    dynamic = bool(meta.get("dynamic_hw"))
    source = meta.get("model", {})
    return Artefact(
        path=path,
        model=source_model_name(source),
        variant=meta["artefact"]["variant"],
        imgsz=None if dynamic else tuple(meta["input_hw"]),
        weights=source.get("weights"),
        random_seed=source.get("random_seed"),
    )


def _artefact_from_name(path: Path) -> Artefact | None:
    """Fallback for files without a sidecar: ``{model}_{size}[_variant].{onnx|tflite}``."""
    parsed = parse_artefact_name(path.name)
    if parsed is None or parsed[0] not in list_models():
        return None
    stem, size, variant = parsed
    return Artefact(path, stem, variant, size, None, None)


def find_exports(folder: Path) -> list[Artefact]:
    """Every ``.onnx`` / ``.tflite`` in ``folder``: from its sidecar when it has one, else from its name."""
    from mobilekit.converters.sidecars import find_artefacts

    found = {path.resolve(): _artefact_from_sidecar(path, meta) for path, meta in find_artefacts(folder)}
    for path in sorted(folder.glob("*.onnx")) + sorted(folder.glob("*.tflite")):
        if path.resolve() not in found and (artefact := _artefact_from_name(path)) is not None:
            found[path.resolve()] = artefact
    return sorted(found.values(), key=lambda a: (a.model, a.imgsz or (0, 0), a.format, a.variant))


def resolve_weights(recorded: str | None) -> str | None:
    """A sidecar's weights path as recorded, else the same file name in the shared weights folder, else None."""
    if recorded is None:
        return None
    if Path(recorded).is_file():
        return str(Path(recorded).resolve())
    from mobilekit.paths import shared_dir

    shared = shared_dir() / "weights" / Path(recorded).name
    return str(shared) if shared.is_file() else None


def default_size(model: str) -> tuple[int, int]:
    """640x640, or the model's own input size where its family works at that size only (BlazeFace)."""
    from mobilekit.families import family_of
    from mobilekit.models import create_model

    deploy = create_model(model).deploy
    return tuple(deploy.input_size) if family_of(deploy).native_input_only else (640, 640)


def default_threads() -> list[int]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return sorted({1, usable})


def _torch_cases(model: str, weights: str | None, seed: int | None, sizes, threads, device: str, backends) -> list[Case]:
    cases = []
    for size in sizes:
        if device == "cuda":
            if "torch" in backends:  # fp32 and fp16 autocast
                cases += [Case(model, b, "pytorch", weights, size, threads[0], "cuda", "cuda", p, seed) for b, p in (("torch", "fp32"), ("torch_fp16", "fp16 autocast"))]
            continue
        for t in threads:
            cases += [Case(model, mode, "pytorch", weights, size, t, random_seed=seed) for mode in TORCH_CPU_MODES if mode in backends]
    return cases


def _file_cases(artefact: Artefact, sizes, threads, device: str, backends) -> list[Case]:
    if artefact.imgsz is not None:
        if sizes and artefact.imgsz not in sizes:
            return []
        use_sizes = [artefact.imgsz]
    else:
        use_sizes = sizes or [(640, 640)]
    precision = VARIANT[artefact.variant].label if artefact.variant in VARIANT else artefact.variant
    path = str(artefact.path)
    cases = []
    for size in use_sizes:
        if artefact.format == "onnx" and "onnxruntime" in backends:
            if device == "cuda":
                cases += [Case(artefact.model, "onnxruntime", artefact.variant, path, size, threads[0], "cuda", p, precision) for p in ("cuda", "tensorrt")]
            else:
                cases += [Case(artefact.model, "onnxruntime", artefact.variant, path, size, t, precision=precision) for t in threads]
        if artefact.format == "tflite" and "tflite" in backends and device == "cpu":
            cases += [Case(artefact.model, "tflite", artefact.variant, path, size, t, provider="xnnpack", precision=precision) for t in threads]
            if "tflite_builtin" in backends:
                cases += [Case(artefact.model, "tflite", artefact.variant, path, size, t, provider="builtin", precision=precision) for t in threads]
    return cases


def plan_cases(
    targets: list[str],
    sizes: list[tuple[int, int]],
    threads: list[int],
    device: str = "cpu",
    backends: tuple[str, ...] = ("torch", "torch_channels_last", "torch_compile", "onnxruntime", "tflite"),
    weights: str | None = None,
    onnx_dir: Path | None = None,
) -> list[Case]:
    """Cases for ``targets``: export folders / files (every format in them, plus PyTorch eager of their
    model) or registered model names (PyTorch, plus ONNX Runtime on an ONNX exported on the fly into
    ``onnx_dir`` when given: seconds, unlike TFLite conversion, which is never done on the fly)."""
    from mobilekit.converters.runtimes import check_readable

    cases: list[Case] = []
    for target in targets:
        path = Path(target)
        if path.is_dir() or path.suffix in (".onnx", ".tflite"):
            if not path.exists():
                raise MobilekitError(f"export file not found: {path}")
            artefacts = find_exports(path) if path.is_dir() else [a for a in find_exports(path.parent) if a.path.resolve() == path.resolve()]
            if not artefacts:
                raise MobilekitError(f"no mobilekit exports (.onnx/.tflite with a sidecar or named MODEL_SIZE[_variant]) in {path}")
            for artefact in artefacts:  # a damaged file is the user's error, not a failed measurement
                check_readable(artefact.path)
            models = dict.fromkeys((a.model, a.weights if weights is None else weights, a.random_seed) for a in artefacts)
            for model, recorded_weights, seed in models:
                model_weights = resolve_weights(recorded_weights)
                torch_sizes = sizes or sorted({a.imgsz for a in artefacts if a.model == model and a.imgsz is not None}) or [(640, 640)]
                cases += _torch_cases(model, model_weights, (seed or 0) if model_weights is None else None, torch_sizes, threads, device, backends)
            for artefact in artefacts:
                cases += _file_cases(artefact, sizes, threads, device, backends)
        elif target in list_models() or is_model_file(target):
            model_sizes = sizes or [default_size(target)]
            cases += _torch_cases(target, weights, None if weights else 0, model_sizes, threads, device, backends)
            if onnx_dir is not None and "onnxruntime" in backends:
                for size in model_sizes:
                    try:
                        onnx_path = export_onnx_on_the_fly(target, weights, size, onnx_dir)
                    except MobilekitError as exc:
                        cases.append(Case(target, "onnxruntime", "onnx", None, size, threads[0], device, unavailable=f"on-the-fly ONNX export failed: {exc}"))
                        continue
                    artefact = Artefact(onnx_path, target, "onnx", size, weights, None)
                    cases += _file_cases(artefact, [size], threads, device, backends)
        else:
            raise MobilekitError(f"{target!r} is neither an export folder/file nor a registered model ({', '.join(list_models())}) nor PATH.py:FUNCTION")
    return list(dict.fromkeys(cases))


def export_onnx_on_the_fly(model_name: str, weights: str | None, size: tuple[int, int], out_dir: Path) -> Path:
    """ONNX export (fused, preprocessing folded, like ``mobilekit export``) of ``model_name`` at ``size``."""
    from mobilekit.converters.model_source import build_source_model
    from mobilekit.converters.onnx_export import export_onnx, prepare_deploy_module
    from mobilekit.converters.sidecars import artefact_stem

    model = build_source_model(model_name, weights, None if weights else 0)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{artefact_stem(model.deploy.name, size)}.onnx"
    export_onnx(prepare_deploy_module(model), size, path)
    return path


DEFAULT_IMAGE = "group_768x1024.jpg"


def default_image() -> Path:
    """The photo end-to-end timings run on: ``DEFAULT_IMAGE`` of the shared photos, else any of them."""
    folder = shared_dir() / "images"
    candidates = [folder / DEFAULT_IMAGE] + (sorted(folder.glob("*.jpg")) if folder.is_dir() else [])
    for path in candidates:
        if path.is_file():
            return path
    raise MobilekitError(f"no photo for the end-to-end timing in {folder}: pass --image PATH")
