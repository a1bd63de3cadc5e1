"""Make ``mobilekit/weights/yunet_{n,s}.pt``, the YuNet weights mobilekit ships (``create_model``'s released
weights for ``yunet_n`` / ``yunet_s``), from the authors' MMDetection checkpoints of libfacedetection.train
(``weights/yunet_n.pth``, ``weights/yunet_s.pth``, Apache-2.0, its licence shipped beside them):

    python tools/make_yunet_weights.py ../shared/weights

Keeps exactly the tensors ``YuNet`` loads (the checkpoint's ``state_dict``, no ``meta`` or optimizer state),
unchanged (float32 weights and batch-norm statistics, int64 counters), in the model's key order, and checks
that they load strictly. The tensors are reproducible, the bytes are not (torch.save writes a random
serialization id): ``tests/test_yunet_family.py`` compares the shipped files' tensors with the .pth files'.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from mobilekit.models.yunet import YuNet, load_authors_weights

from mobilekit.checkpoint import read_state_dict
from mobilekit.package_data import YUNET_LICENCE, YUNET_WEIGHTS

PACKAGE = Path(__file__).resolve().parent.parent / "mobilekit"
LICENCE_SOURCE = "YUNET_LICENSE.txt"


def shipped_state(authors_pth: Path, variant: str) -> dict[str, torch.Tensor]:
    """The tensors of ``authors_pth`` that ``YuNet(variant)`` loads, checked by a strict load."""
    model = load_authors_weights(YuNet(variant), authors_pth)
    state = read_state_dict(authors_pth)
    return {k: state[k].clone() for k in model.state_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="folder holding yunet_n.pth, yunet_s.pth and YUNET_LICENSE.txt")
    parser.add_argument("--out", type=Path, default=PACKAGE, help="the mobilekit package folder")
    args = parser.parse_args()
    for variant, name in YUNET_WEIGHTS.items():
        target = args.out / name
        torch.save(shipped_state(args.weights / f"yunet_{variant}.pth", variant), target)
        print(f"{target}: {target.stat().st_size} bytes")
    shutil.copyfile(args.weights / LICENCE_SOURCE, args.out / YUNET_LICENCE)
    print(f"{args.out / YUNET_LICENCE}: the authors' Apache-2.0 licence")


if __name__ == "__main__":
    main()
