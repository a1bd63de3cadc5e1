"""PyTorch -> ONNX (-> simplified ONNX): the deployable graph every other format starts from."""

from __future__ import annotations

import contextlib
import copy
import io
import re
import warnings
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils._python_dispatch import TorchDispatchMode

from mobilekit.atomic import atomic_path
from mobilekit.errors import MobilekitError
from mobilekit.models import DeployModule, FaceDetector

INPUT_NAME = "images"
MIN_OPSET = 17
DEFAULT_OPSET = 17


class ExportError(MobilekitError):
    """A model that cannot be exported, with the operator and the PyTorch module named."""


def prepare_deploy_module(model: FaceDetector) -> DeployModule:
    """A deep copy ready to export: eval mode, input preprocessing folded, every BatchNorm folded."""
    detector = copy.deepcopy(model).cpu().eval()
    detector.fold_input_preprocessing()
    fold_batchnorms(detector)
    return DeployModule(detector).eval()


class ChannelAffine(nn.Module):
    """An eval-mode BatchNorm2d as ``x * scale + shift`` (for a BN that follows no convolution)."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0.0)
        self.register_buffer("scale", scale.detach().view(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.detach().view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


@torch.no_grad()
def fold_batchnorms(module: nn.Module) -> dict[str, int]:
    """Fold every eval BatchNorm2d: into the Conv2d right before it inside an ``nn.Sequential``,
    otherwise (e.g. after a deformable conv) into a per-channel :class:`ChannelAffine`. Returns counts."""
    counts = {"into_conv": 0, "into_affine": 0}
    for parent in list(module.modules()):
        names = list(parent._modules)
        for index, name in enumerate(names):
            bn = parent._modules[name]
            if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats:
                continue
            previous = parent._modules[names[index - 1]] if index and isinstance(parent, nn.Sequential) else None
            if isinstance(previous, nn.Conv2d):
                parent._modules[names[index - 1]] = fuse_conv_bn_eval(previous, bn)
                parent._modules[name] = nn.Identity()
                counts["into_conv"] += 1
            else:
                parent._modules[name] = ChannelAffine(bn)
                counts["into_affine"] += 1
    return counts


def module_path_from_node(node_name: str) -> str:
    """ONNX node name ``/model/body/stage1/stage1.0/stage1.0.0/Conv`` -> module ``body.stage1.0.0``."""
    parts = [p for p in node_name.removeprefix("wa/").split("/") if p][:-1]
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    dotted = ".".join(path)
    return dotted.removeprefix("model.") if dotted != "model" else ""


class _OpLocator(TorchDispatchMode):
    """Records, for each operator, the first module whose forward called it."""

    def __init__(self, module_names: dict[nn.Module, str]) -> None:
        super().__init__()
        self.module_names = module_names
        self.stack: list[str] = []
        self.first_module: dict[str, str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = getattr(getattr(func, "_schema", None), "name", str(func))
        self.first_module.setdefault(name, self.stack[-1] if self.stack else "")
        return func(*args, **(kwargs or {}))


def locate_operator(module: nn.Module, example: torch.Tensor, operator: str) -> str | None:
    """The module path (inside the detector) that runs ``operator`` (e.g. ``torchvision::deform_conv2d``)."""
    names = {m: n.removeprefix("model.") for n, m in module.named_modules()}
    locator = _OpLocator(names)

    def enter(mod: nn.Module, args) -> None:
        locator.stack.append(names.get(mod, "?"))

    def leave(mod: nn.Module, args, output) -> None:
        locator.stack.pop()

    pre = nn.modules.module.register_module_forward_pre_hook(enter)
    post = nn.modules.module.register_module_forward_hook(leave)
    try:
        with torch.no_grad(), locator:
            module(example)
    except Exception:
        return None
    finally:
        pre.remove()
        post.remove()
    base = operator.split(".")[0]
    return locator.first_module.get(base)


def _describe_export_failure(exc: Exception, module: nn.Module, example: torch.Tensor) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    match = re.search(r"operator '([^']+)'", str(exc))
    if match:
        operator = match.group(1)
        where = locate_operator(module, example, operator)
        place = f"PyTorch module '{where}'" if where else "an unknown module"
        return f"ONNX export failed: operator '{operator}' (used in {place}) cannot be exported: {text}"
    return f"ONNX export failed ({type(exc).__name__}): {text}"


def export_onnx(
    module: DeployModule,
    input_hw: tuple[int, int],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
) -> dict:
    """Export ``module`` (from :func:`prepare_deploy_module`) to ``path``; returns the graph check summary."""
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: mobilekit exports opset >= {MIN_OPSET}")
    output_names = list(module.model.deploy.output_names)
    example = torch.rand(1, 3, *input_hw, generator=torch.Generator().manual_seed(0)) * 255.0
    dynamic_axes = {INPUT_NAME: {2: "height", 3: "width"}} | {n: {1: "priors"} for n in output_names} if dynamic else None
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=output_names,
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                )
        except Exception as exc:
            raise ExportError(_describe_export_failure(exc, module, example)) from exc
        summary = check_onnx(tmp)
    return summary


def check_onnx(path: str | Path) -> dict:
    """``onnx.checker`` (full check) plus the op histogram; BatchNormalization nodes are listed."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected {Path(path).name}: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)
    return {
        "onnx_checker": "passed",
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "ops": dict(sorted(ops.items())),
        "batchnorm_nodes": [module_path_from_node(n.name) for n in model.graph.node if n.op_type == "BatchNormalization"],
        "outputs": {
            out.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in out.type.tensor_type.shape.dim]
            for out in model.graph.output
        },
    }


def simplify_onnx(source: str | Path, target: str | Path) -> tuple[bool, str]:
    """Run onnxsim with its own numeric check; returns (written, message). Never raises for onnxsim failures."""
    import onnx
    import onnxsim

    try:
        model = onnx.load(str(source))
        with contextlib.redirect_stdout(io.StringIO()):  # onnxsim prints its check progress
            simplified, check_ok = onnxsim.simplify(model, check_n=2)
    except Exception as exc:  # onnxsim raises many types; the unsimplified graph stays usable
        return False, f"onnxsim could not simplify the graph ({type(exc).__name__}: {str(exc).strip()[:300]}); using the unsimplified ONNX"
    if not check_ok:
        return False, "onnxsim's own check failed (outputs differ from the unsimplified graph); using the unsimplified ONNX"
    with atomic_path(target) as tmp:
        onnx.save(simplified, str(tmp))
        check_onnx(tmp)
    before, after = len(model.graph.node), len(simplified.graph.node)
    return True, f"onnxsim: {before} -> {after} nodes, check passed"
