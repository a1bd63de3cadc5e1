from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mobilekit.paths import shared_dir

torch.set_num_threads(2)

pytest_plugins = ["export_fixtures"]  # session-scoped exports (tests/export_fixtures.py)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder (``MOBILEKIT_SHARED``, default ``../shared``); skips when absent."""
    path = shared_dir()
    if not (path / "weights").is_dir():
        pytest.skip(f"shared data folder {path} is absent (set MOBILEKIT_SHARED)")
    return path


@pytest.fixture(scope="session")
def shared_images(shared: Path) -> list[Path]:
    return sorted((shared / "images").glob("*.jpg"))
