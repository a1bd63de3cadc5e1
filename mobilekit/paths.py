"""Where shared test data lives: one setting, ``MOBILEKIT_SHARED`` (default ``../shared``)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("MOBILEKIT_SHARED", PROJECT_ROOT.parent / "shared")).resolve()
