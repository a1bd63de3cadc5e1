"""``mobilekit arm-setup``: the emulated ARM64 CPUs for ``parity --arm`` and ``benchmark --arm-count``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console


def arm_setup(
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder for every piece (default: $MOBILEKIT_ARM_CACHE, else ~/.cache/mobilekit/arm)."),
) -> None:
    """Fetch qemu-user, an arm64 Python with LiteRT's aarch64 wheel and build the instruction-count plugin
    into one folder, without root and without installing anything into the system (about 200 MB, a
    minute). Idempotent: a second run does nothing. Needs Debian's mirrors, PyPI and gcc.

    Examples:

      mobilekit arm-setup

      mobilekit arm-setup --cache /tmp/arm && mobilekit parity exports/ --images photos/ --arm cortex-a53 --arm-cache /tmp/arm
    """
    from mobilekit.converters.arm_setup import setup

    console = Console(stderr=True)
    manifest = setup(cache, log=lambda line: console.print(line, markup=False, highlight=False))
    versions = ", ".join(f"{k} {v}" for k, v in manifest.items() if k in ("qemu", "python3.11_arm64"))
    wheels = ", ".join(f"{k} {v}" for k, v in manifest["wheels"].items())
    console.print(f"{versions}; aarch64 wheels: {wheels}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("arm-setup")(arm_setup)
