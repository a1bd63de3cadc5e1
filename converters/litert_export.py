"""PyTorch -> TFLite with Google's direct converter (litert-torch), the second converter beside onnx2tf.

The deploy module is wrapped to take NHWC float32 RGB 0-255 (``images``) and to return a dict of the
family's outputs, exported with ``torch.export`` here, and converted in a child process
(``litert_child``). Files get the ``_litert`` suffix of the variant table and appear under their final
names only when every requested variant converted.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from mobilekit.converters.child_process import last_log_line, run_child_job
from mobilekit.converters.onnx_export import locate_operator
from mobilekit.converters.tflite_export import require_xnnpack_loads
from mobilekit.converters.variants import VARIANT, artefact_path
from mobilekit.errors import MobilekitError
from mobilekit.models import DeployModule

LITERT_MODULE = "litert_torch"
LITERT_EXTRA = 'pip install "mobilekit[litert]"'


class LitertUnavailable(MobilekitError):
    """litert-torch is not installed (it is the optional ``litert`` extra)."""


class LitertConversionFailed(MobilekitError):
    """litert-torch cannot convert this model; ``str(exc)`` names the operator and the PyTorch module."""


class NHWCDeployModule(nn.Module):
    """NHWC RGB 0-255 in (the TFLite contract), ``{output name: tensor}`` out, so that the converted
    signature names its outputs after the family (read by name, never by position).

    The mean is subtracted from each image row seen as one ``W*3`` vector (the mean tiled along it):
    the same floats as a per-channel subtraction, but XNNPACK runs a broadcast over a 3-wide innermost
    axis about 6x slower than this contiguous one (RetinaFace 640: ~1 ms of 13 at one thread).
    """

    def __init__(self, deploy_module: DeployModule) -> None:
        super().__init__()
        detector = deploy_module.model
        if detector.channel_permutation is not None or not detector.input_std_is_one:
            raise MobilekitError("NHWCDeployModule needs the input preprocessing folded (prepare_deploy_module)")
        self.deploy_module = deploy_module
        self.output_names = tuple(detector.deploy.output_names)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        n, h, w, c = images.shape
        detector = self.deploy_module.model
        rows = images.reshape(n, h, w * c) - detector.input_mean.reshape(c).repeat(w)
        x = rows.reshape(n, h, w, c).permute(0, 3, 1, 2)
        return dict(zip(self.output_names, detector.deploy_outputs(detector.forward_normalized(x))))


def litert_available() -> bool:
    """Whether litert-torch (the optional ``litert`` extra) is installed."""
    return importlib.util.find_spec(LITERT_MODULE) is not None


def require_litert() -> None:
    if not litert_available():
        raise LitertUnavailable(f"--converter litert needs litert-torch, which is not installed: {LITERT_EXTRA}")


def convert_with_litert(
    deploy_module: DeployModule,
    out_dir: Path,
    stem: str,
    variants: tuple[str, ...],
    sample: np.ndarray,
    timeout_s: float = 1800,
) -> dict[str, dict]:
    """Convert ``deploy_module`` to each litert ``variant``; returns ``{variant: {"path", ...worker info}}``.

    ``sample`` (``[1, H, W, 3]`` raw RGB 0-255 float32) is traced and checked against.
    """
    require_litert()
    wrong = [v for v in variants if VARIANT.get(v) is None or VARIANT[v].converter != "litert"]
    if wrong:
        raise MobilekitError(f"not litert variants: {wrong}")
    finals = {v: artefact_path(out_dir, stem, v) for v in variants}
    wrapper = NHWCDeployModule(deploy_module).eval()
    images = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))
    with tempfile.TemporaryDirectory(prefix="mobilekit_litert_") as work:
        work_dir = Path(work)
        program = work_dir / "program.pt2"
        with torch.no_grad():
            torch.export.save(torch.export.export(wrapper, (), {"images": images}, strict=False), str(program))
        np.save(work_dir / "sample.npy", images.numpy())
        probes: dict[str, dict] = {}
        job = {
            "program": str(program),
            "sample_npy": str(work_dir / "sample.npy"),
            "kinds": {v: VARIANT[v].kind for v in variants},
        }
        result = run_child_job(
            "mobilekit.converters.litert_child", job, work_dir, timeout_s,
            failure=lambda result, log: LitertConversionFailed(_describe_failure(result, log, wrapper, images)),
            timed_out=lambda: LitertConversionFailed(f"litert-torch took longer than {timeout_s:.0f} s"),
            finals=finals,
            extra_env={"JAX_PLATFORMS": "cpu"},
            check=lambda result, written: probes.update(require_xnnpack_loads(written, finals, {})),
        )  # fmt: skip
    converted = {}
    for variant, info in result["variants"].items():
        info["analysis"]["xnnpack_load"] = probes[variant]
        converted[variant] = {"path": finals[variant], "fp32_seconds": result["fp32_seconds"], **info}
    return converted


def _describe_failure(result: dict | None, log: str, wrapper: nn.Module, images: torch.Tensor) -> str:
    """One line: the operator litert-torch stopped at and the PyTorch module that calls it."""
    if result is None:
        return f"litert-torch crashed: {last_log_line(log)}"
    op = result.get("op")
    where = ""
    if op:
        module = _locate(wrapper, images, op)
        where = f" at operator {op} (PyTorch module '{module or '<top level>'}')"
    return f"litert-torch cannot convert the model{where}: {result.get('error')}"


def _locate(wrapper: nn.Module, images: torch.Tensor, op: str) -> str | None:
    path = locate_operator(wrapper, images, op)
    return path.removeprefix("deploy_module.").removeprefix("model.") if path else None
