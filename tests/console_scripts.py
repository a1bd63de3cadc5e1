"""Console scripts of the environment that runs the tests, never a command looked up on PATH."""

from __future__ import annotations

import sys
from pathlib import Path


def console_script(name: str) -> str:
    """Path of ``name`` installed beside this interpreter (``.venv/bin/mobilekit`` for ``.venv/bin/python``)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not installed beside {sys.executable}: run `pip install -e .` in this environment")
    return str(path)
