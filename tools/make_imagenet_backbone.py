"""Make ``mobilekit/weights/mobilenetv1_025_imagenet.pt``, the backbone mobilekit ships, from Pytorch_Retinaface's
ImageNet pretraining ``mobilenetv1_025_imagenet.tar`` (``mobilenetV1X0.25_pretrain.tar`` there, MIT):

    python tools/make_imagenet_backbone.py ../shared/weights/mobilenetv1_025_imagenet.tar

Keeps exactly the tensors ``MobileNetV1Backbone`` loads (``module.`` stripped; no ``fc`` classifier, epoch or
optimizer state), unchanged (float32 weights and batch-norm statistics, int64 counters), in the backbone's key
order. The tensors are reproducible, the bytes are not (torch.save writes a random serialization id):
``tests/test_package_data.py`` compares the shipped file's tensors with the .tar's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mobilekit.checkpoint import read_state_dict
from mobilekit.models.mobilenet import MobileNetV1Backbone
from mobilekit.package_data import IMAGENET_BACKBONE

OUTPUT = Path(__file__).resolve().parent.parent / "mobilekit" / IMAGENET_BACKBONE


def backbone_state(pretraining: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``pretraining`` that ``MobileNetV1Backbone`` loads, checked against its shapes and dtypes."""
    state = read_state_dict(pretraining)
    expected = MobileNetV1Backbone().state_dict()
    wrong = [k for k, v in expected.items() if k not in state or state[k].shape != v.shape or state[k].dtype != v.dtype]
    if wrong:
        raise SystemExit(f"{pretraining} does not hold MobileNetV1-0.25's backbone: {', '.join(wrong[:5])}")
    return {k: state[k].clone() for k in expected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pretraining", type=Path, help="mobilenetv1_025_imagenet.tar")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    torch.save(backbone_state(args.pretraining), args.out)
    print(f"{args.out}: {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
