"""Convolution weights read straight from a TFLite flatbuffer (Google's BlazeFace files).

The graph is parsed with the schema shipped in ``ai_edge_litert`` (no interpreter runs). A weight
reaches its convolution through ``DEQUANTIZE`` (float16 storage) and, in "sparse" files, ``DENSIFY``
(the tensor stored with TFLite sparsity parameters: dense outer dimensions, CSR innermost); both are
undone here. Layouts become PyTorch's: ``CONV_2D`` kernels are OHWI -> OIHW, ``DEPTHWISE_CONV_2D``
kernels 1HWO -> O1HW.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilekit.errors import MobilekitError

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_PASS_THROUGH_OPS = ("DEQUANTIZE", "DENSIFY")  # what sits between a stored constant and the convolution
_NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8, "INT8": np.int8}


@dataclass(frozen=True)
class TfliteConv:
    """One convolution of the graph, in execution order, with PyTorch-layout float32 weights."""

    op: str  # CONV_2D | DEPTHWISE_CONV_2D
    weight: np.ndarray  # [O, I/groups, kH, kW]
    bias: np.ndarray  # [O]
    stride: int
    output_shape: tuple[int, ...]  # NHWC, as the file declares it


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def _densify(values: np.ndarray, shape: tuple[int, ...], sparsity) -> np.ndarray:
    """TFLite sparsity parameters -> the dense tensor (identity traversal order, no blocks, CSR dimensions
    of any depth below dense ones: what the MediaPipe converter writes)."""
    order = [int(v) for v in sparsity.traversalOrder]
    if order != list(range(len(shape))) or sparsity.blockMap is not None and len(sparsity.blockMap):
        raise MobilekitError(f"unsupported TFLite sparsity (traversal order {order}, block map {sparsity.blockMap})")
    dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    # Walk the dimensions: `positions` holds flat dense offsets of the current prefix, `ranges` where each
    # prefix's stored children start in the next level's segment/value arrays.
    positions = np.zeros(1, dtype=np.int64)
    ranges = np.zeros(1, dtype=np.int64)
    for dim, meta in zip(shape, sparsity.dimMetadata):
        if meta.format == 0:  # DENSE
            positions = (positions[:, None] * dim + np.arange(dim)).ravel()
            ranges = (ranges[:, None] * dim + np.arange(dim)).ravel()
        else:  # SPARSE_CSR: children of prefix p are indices[segments[p]:segments[p + 1]]
            segments = np.asarray(meta.arraySegments.values, dtype=np.int64)
            indices = np.asarray(meta.arrayIndices.values, dtype=np.int64)
            counts = segments[ranges + 1] - segments[ranges]
            stored = np.concatenate([np.arange(segments[r], segments[r + 1]) for r in ranges]) if len(ranges) else np.zeros(0, np.int64)
            positions = np.repeat(positions, counts) * dim + indices[stored]
            ranges = stored
    if len(positions) != len(values):
        raise MobilekitError(f"TFLite sparse tensor holds {len(values)} values for {len(positions)} positions")
    dense[positions] = values
    return dense.reshape(shape)


class TfliteGraph:
    """The first subgraph of a ``.tflite`` file: operators by name, constants as NumPy arrays."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise MobilekitError(f"TFLite weights not found: {path}")
        data = path.read_bytes()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise MobilekitError(f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier)")
        schema = _schema()
        self.path = path
        try:
            self.model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:  # offsets past the end of a cut file
            raise MobilekitError(f"{path} is not a readable TFLite flatbuffer ({exc}): truncated or corrupt?") from None
        self.graph = self.model.subgraphs[0]
        op_names = _enum_names(schema.BuiltinOperator)
        self.type_names = _enum_names(schema.TensorType)
        self.op_names = []
        for op in self.graph.operators:
            code = self.model.operatorCodes[op.opcodeIndex]
            self.op_names.append(op_names[max(code.builtinCode, code.deprecatedBuiltinCode)])
        self.producer = {int(out): k for k, op in enumerate(self.graph.operators) for out in op.outputs}

    def stored_tensor(self, index: int):
        """The tensor whose buffer holds the value of tensor ``index`` (back through ``DEQUANTIZE`` / ``DENSIFY``)."""
        while index in self.producer and self.op_names[self.producer[index]] in _PASS_THROUGH_OPS:
            index = int(self.graph.operators[self.producer[index]].inputs[0])
        return self.graph.tensors[index]

    def constant(self, index: int) -> np.ndarray:
        """Tensor ``index`` as float32, decoded from its stored bytes (float16 widened, sparse densified)."""
        tensor = self.stored_tensor(index)
        buffer = self.model.buffers[tensor.buffer]
        if buffer.data is None or len(buffer.data) == 0:
            raise MobilekitError(f"{self.path.name}: tensor {tensor.name.decode()} is not a constant")
        type_name = self.type_names[tensor.type]
        if type_name not in _NUMPY_TYPES:
            raise MobilekitError(f"{self.path.name}: tensor {tensor.name.decode()} has unsupported type {type_name}")
        values = np.frombuffer(bytes(buffer.data), dtype=_NUMPY_TYPES[type_name])
        shape = tuple(int(v) for v in tensor.shape)
        array = _densify(values, shape, tensor.sparsity) if tensor.sparsity is not None else values.reshape(shape)
        return array.astype(np.float32)

    def convolutions(self) -> list[TfliteConv]:
        """Every convolution in execution order, weights in PyTorch layout."""
        convs = []
        for op, name in zip(self.graph.operators, self.op_names):
            if name not in CONV_OPS:
                continue
            kernel = self.constant(int(op.inputs[1]))
            weight = kernel.transpose(0, 3, 1, 2) if name == "CONV_2D" else kernel[0].transpose(2, 0, 1)[:, None]
            output_shape = tuple(int(v) for v in self.graph.tensors[int(op.outputs[0])].shape)
            convs.append(TfliteConv(name, np.ascontiguousarray(weight), self.constant(int(op.inputs[2])), int(op.builtinOptions.strideH), output_shape))
        return convs
