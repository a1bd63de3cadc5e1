"""The float criterion: what every fp32 file must meet against the float64 PyTorch reference, on any CPU
(x86 or ARM), any kernels and any converter, on any photos.

*Error measure.* Each output group (an output, or a column group of one: see
``DetectorFamily.output_groups``) on each photo: ``max |file - reference| / max |reference|``, the error
as a fraction of the group's own magnitude on that photo. Logits down to -600, box offsets, pixels and
probabilities are judged on one scale, and an error is charged relative to the values it came with.

*Bound.* A float32 convolution or matrix product sums K products; whatever the order of the sum (AVX2,
AVX-512, NEON, SME kernels, blocked or pairwise), its rounding error is about sqrt(K) * u relative to
its terms (u = 2^-24, float32's unit roundoff; the probabilistic bound of Higham and Mary, SIAM J. Sci.
Comput. 2019), plus u for the rounding of each stored weight. Normalised layers keep the gain of the
layers after it near 1, so the errors of the layers on a path add up. The bound of an output is

    GROWTH * u * max over input->output paths of sum over its layers (1 + sqrt(K))

computed from the model's own graph (:func:`rounding_paths`), with no constant of any model. GROWTH
covers what the sum leaves out (cancellation inside each sum, elementwise ops, the max over every value):
measured once on inputs nobody tuned it on (darkened, backlit, grey, tilted, cropped and synthetic
versions of the shared photos; every family, both converters, XNNPACK, LiteRT's built-in kernels, ONNX
Runtime and PyTorch's own float32), the worst correct file reached 1.16 ``u * sum(1 + sqrt(K))``, so 8
leaves a factor of 7; each of 199 weight tensors changed by 1 % moved the outputs by 1.1 to 1800 times
the bound (median 60 to 330 per model). Measurements and derivation: docs/float_criterion.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mobilekit.families import family_of

FLOAT32_ROUNDOFF = 2.0**-24
GROWTH = 8.0
_WEIGHTED_LAYERS = ("ConvolutionBackward", "MmBackward", "AddmmBackward", "BmmBackward")


@dataclass(frozen=True)
class RoundingPath:
    """The input->output path of an output that gathers the most rounding: its weighted layers
    (convolutions, matrix products) and their sum of ``1 + sqrt(K)`` (K: the layer's reduction length)."""

    layers: int
    rounding: float


def _reduction_length(node) -> int:
    """K of a convolution or matrix product's autograd node: the terms summed for each output value."""
    weight = getattr(node, "_saved_weight", None)
    if weight is not None:
        return int(np.prod(weight.shape[1:]))
    for attribute, axis in (("_saved_mat2", -2), ("_saved_self", -1)):
        operand = getattr(node, attribute, None)
        if operand is not None:
            return int(operand.shape[axis])
    return 1


def rounding_paths(model, input_hw: tuple[int, int]) -> dict[str, RoundingPath]:
    """Per output of ``model`` (by deployment name), the path with the most rounding, read from the
    autograd graph of one float32 forward pass at ``input_hw``."""
    import torch

    model = model.eval()
    image = torch.zeros(1, 3, *input_hw, dtype=next(model.parameters()).dtype, requires_grad=True)
    with torch.enable_grad():
        outputs = model.deploy_outputs(model(image))
    memo: dict = {}

    def path(root) -> RoundingPath:
        stack = [root]
        while stack:  # iterative post-order: graphs are thousands of nodes deep
            node = stack[-1]
            if node in memo:
                stack.pop()
                continue
            parents = [parent for parent, _ in node.next_functions if parent is not None]
            pending = [parent for parent in parents if parent not in memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            layers = max((memo[p].layers for p in parents), default=0)
            rounding = max((memo[p].rounding for p in parents), default=0.0)
            if type(node).__name__.startswith(_WEIGHTED_LAYERS):
                layers, rounding = layers + 1, rounding + 1.0 + math.sqrt(_reduction_length(node))
            memo[node] = RoundingPath(layers, rounding)
        return memo[root]

    return {name: path(output.grad_fn) for name, output in zip(model.deploy.output_names, outputs)}


def relative_error(reference: np.ndarray, test: np.ndarray) -> float:
    """``max |test - reference| / max |reference|``: the error as a fraction of the values' magnitude
    (0 when both are all zero, infinite when only the reference is)."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    error, magnitude = float(np.abs(test - reference).max()), float(np.abs(reference).max())
    if magnitude == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return error / magnitude


@dataclass(frozen=True)
class FloatCriterion:
    """A model's float bounds: per output its rounding path, per output group the bound on its relative error."""

    paths: dict[str, RoundingPath]
    bounds: dict[str, float]

    def describe(self) -> str:
        """The criterion in words, as parity reports state it."""
        outputs_by_path: dict[RoundingPath, list[str]] = {}
        for name, path in self.paths.items():
            outputs_by_path.setdefault(path, []).append(name)
        per_output = "; ".join(
            f"{', '.join(names)}: {path.layers} layers, sum(1 + sqrt(K)) {path.rounding:.0f}" for path, names in outputs_by_path.items()
        )
        bounds = ", ".join(f"{group} {bound:.2e}" for group, bound in self.bounds.items())
        return (
            f"every output group, on every photo: max |error| / max |PyTorch float64| <= {GROWTH:g} * 2^-24 * "
            f"sum(1 + sqrt(K)) over the layers of its longest path ({per_output}): {bounds}"
        )


def float_criterion(model, input_hw: tuple[int, int]) -> FloatCriterion:
    """The float criterion of ``model`` at ``input_hw``: each output group's bound from its output's path."""
    deploy = model.deploy
    paths = rounding_paths(model, input_hw)
    family = family_of(deploy)
    bounds = {
        group: GROWTH * FLOAT32_ROUNDOFF * paths[name].rounding
        for name in deploy.output_names
        for group in family.output_groups(name, deploy)
    }
    return FloatCriterion(paths, bounds)
