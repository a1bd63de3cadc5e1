"""Command-line parsing shared by the benchmark scripts: bad input is one line naming the option, exit 2."""

from __future__ import annotations

import argparse
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: argument --x: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def existing_file(*suffixes: str):
    """``type=`` for a path that must be a file (ending in one of ``suffixes`` when given)."""

    def check(text: str) -> Path:
        path = Path(text)
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"no such file: {path}")
        if suffixes and path.suffix not in suffixes:
            raise argparse.ArgumentTypeError(f"{path} is not a {' or '.join(suffixes)} file")
        return path

    return check


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {path}")
    return path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def thread_counts(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``."""
    return [positive_int(part) for part in text.split(",")]


def named_path(exists):
    """``type=`` for ``NAME=PATH`` where ``exists(path)`` holds; returns ``(name, path)``."""

    def check(text: str) -> tuple[str, Path]:
        name, sep, path = text.partition("=")
        if not sep or not name or not exists(Path(path)):
            raise argparse.ArgumentTypeError(f"expected NAME=PATH with an existing path, got {text!r}")
        return name, Path(path)

    return check
