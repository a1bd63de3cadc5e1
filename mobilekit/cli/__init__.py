"""The ``mobilekit`` command. Each sub-command lives in its own module with a ``register(app)``."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.text import Text

from mobilekit.errors import MobilekitError

app = typer.Typer(
    name="mobilekit",
    help="Face detectors from PyTorch training to a Flutter app, with numeric parity at every step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register_commands() -> None:
    from mobilekit.cli import benchmark, data, eval, export, package, params, parity, predict, run, train

    for module in (run, predict, params, data, train, eval, export, parity, benchmark, package):
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs a sub-command; user errors print one clear line and exit with status 2."""
    _register_commands()
    try:
        status = app(args=argv, standalone_mode=False)  # click returns typer.Exit codes here
        if isinstance(status, int) and status:
            sys.exit(status)
    except MobilekitError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code and message
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
