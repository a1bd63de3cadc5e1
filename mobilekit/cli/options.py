"""Value checks for command-line options, run while the command line is parsed.

Each check is a typer callback: a bad value raises ``typer.BadParameter``, which the entry point
prints as one usage line naming the option (exit status 2). Numeric ranges use typer's own
``min``/``max``; the values here are the ones a range cannot express.
"""

from __future__ import annotations

import re
from typing import Optional

import typer

from mobilekit.config import parse_size

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_size(value: Optional[str]) -> Optional[str]:
    """``N`` or ``H,W`` (also ``HxW``) with positive integers."""
    if value is not None:
        try:
            parse_size(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def check_sizes(value: Optional[str]) -> Optional[str]:
    """Comma-separated sizes, each ``N`` or ``HxW``: ``320,640`` or ``480x640``."""
    if value is not None:
        items = [item for item in value.split(",") if item.strip()]
        if not items:
            raise typer.BadParameter(f"no size in {value!r} (use e.g. 320,640 or 480x640)")
        for item in items:
            try:
                parse_size(item.strip())
            except ValueError:
                raise typer.BadParameter(f"{item.strip()!r} is not a size (use e.g. 320,640 or 480x640)") from None
    return value


def check_int_list(value: Optional[str]) -> Optional[str]:
    """Comma-separated positive integers: ``1,2,4``."""
    if value is not None:
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items or not all(item.isdigit() and int(item) >= 1 for item in items):
            raise typer.BadParameter(f"takes comma-separated positive integers, got {value!r}")
    return value


def check_int_list_or_zero(value: Optional[str]) -> Optional[str]:
    """Comma-separated integers >= 0: ``0,1,2``."""
    if value is not None:
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items or not all(item.isdigit() for item in items):
            raise typer.BadParameter(f"takes comma-separated integers >= 0, got {value!r}")
    return value


def check_device(value: Optional[str]) -> Optional[str]:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA is usable is checked when it is used)."""
    if value is not None and not DEVICE_PATTERN.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")
    return value


def check_batch(value: Optional[str]) -> Optional[str]:
    """An integer >= 2 (batch norm needs two samples) or ``auto``."""
    if value is not None and value != "auto" and not (value.isdigit() and int(value) >= 2):
        raise typer.BadParameter(f"takes an integer >= 2 or 'auto', got {value!r}")
    return value


def check_positive(value: Optional[float]) -> Optional[float]:
    """A number > 0."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be > 0, got {value}")
    return value


def check_share(value: Optional[float]) -> Optional[float]:
    """A share in [0, 1)."""
    if value is not None and not 0 <= value < 1:
        raise typer.BadParameter(f"must be in [0, 1), got {value}")
    return value
