"""Markdown pipe tables for the benchmark reports, and the JSON + Markdown pair each report is written as."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from mobilekit.atomic import write_json_atomic, write_text_atomic


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> list[str]:
    """The table's lines. ``align`` has one letter per column, ``l`` (labels) or ``r`` (numbers);
    default: the first column left, the others right. A row of the wrong width is a ValueError."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r} does not fit the {len(header)} columns {list(header)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)} has {len(row)} cells for the {len(header)} columns {list(header)}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return lines


def write_report(folder: Path, name: str, result: dict, text: str) -> None:
    """``folder/name.json`` (the measurements) and ``folder/name.md`` (``text``), then ``text`` on stdout."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{name}.json", result)
    write_text_atomic(folder / f"{name}.md", text)
    print(text)
