"""``mobilekit params``: exact parameter and MAC counts per component."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mobilekit.cli.options import check_size
from mobilekit.atomic import write_json_atomic
from mobilekit.config import parse_size


def params(
    name: str = typer.Argument(..., help="Registered model name (an unknown name lists the available ones)."),
    imgsz: Optional[str] = typer.Option(None, "--imgsz", callback=check_size, help="Input size N or H,W for the MAC count (default: the model's own, 640 for most)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the breakdown to this JSON file."),
) -> None:
    """Total and per-component parameters and multiply-accumulates at an input size.

    Examples:

      mobilekit params retinaface_mnet025

      mobilekit params featherface_v1 --imgsz 480,640 --json params.json
    """
    from mobilekit.models import create_model
    from mobilekit.profiling import cost_breakdown

    model = create_model(name)
    size = parse_size(imgsz) or model.deploy.input_size
    rows = cost_breakdown(model, size)
    table = Table(title=f"{name} at {size[0]}x{size[1]}")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    table.add_column("share", justify="right")
    table.add_column("MACs", justify="right")
    total = rows[-1]
    for row in rows:
        share = f"{100 * row.params / total.params:.1f}%"
        table.add_row(row.name, f"{row.params:,}", share, f"{row.macs / 1e6:,.1f} M", style="bold" if row is total else None)
    Console().print(table)
    if json_out:
        payload = {
            "model": name,
            "input_size": list(size),
            "total_params": total.params,
            "total_macs": total.macs,
            "components": [{"name": r.name, "params": r.params, "macs": r.macs} for r in rows[:-1]],
        }
        write_json_atomic(json_out, payload)


def register(app: typer.Typer) -> None:
    app.command("params")(params)
