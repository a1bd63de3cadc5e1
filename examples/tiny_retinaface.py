"""Your own detector, without editing mobilekit: a narrower RetinaFace-MobileNet-0.25 (32 FPN/SSH
channels instead of 64) under its own name, in the RetinaFace family (priors, MultiBox loss, decode).

Every command that takes a model name takes ``examples/tiny_retinaface.py:build`` the same way:

    mobilekit params examples/tiny_retinaface.py:build
    mobilekit train --model examples/tiny_retinaface.py:build --data synth/ --out runs/tiny
    mobilekit export examples/tiny_retinaface.py:build --weights runs/tiny/best_weights.pth --tflite --out exports/tiny
    mobilekit parity exports/tiny --images photos/

The export's sidecars record this file and its sha256, so ``parity``, ``benchmark`` and ``package``
rebuild the same model (and refuse if the file changed since).
"""

from mobilekit.config import DeployConfig
from mobilekit.models.retinaface import RetinaFaceMobileNet


def build() -> RetinaFaceMobileNet:
    return RetinaFaceMobileNet(out_channels=32, deploy=DeployConfig(name="tiny_retinaface"))
