"""The ``mobilekit`` command. Each sub-command lives in its own module with a ``register(app)``."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.text import Text

from mobilekit.errors import CheckFailed, MobilekitError

app = typer.Typer(
    name="mobilekit",
    help="Face detectors from PyTorch training to a Flutter app, with numeric parity at every step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register_commands() -> None:
    from mobilekit.cli import arm_setup, benchmark, data, eval, export, package, params, parity, predict, run, train

    for module in (run, predict, params, data, train, eval, export, parity, benchmark, package, arm_setup):
        module.register(app)


def usage_error_type() -> type[Exception]:
    """click's ``ClickException``, taken from typer itself: newer typers carry their own copy of click."""
    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs a sub-command; usage and user errors print one clear message and exit with status 2,
    a failed check (:class:`CheckFailed`) with status 1."""
    _register_commands()
    usage_error = usage_error_type()
    try:
        status = app(args=argv, standalone_mode=False)  # click returns typer.Exit codes here
        if isinstance(status, int) and status:
            sys.exit(status)
    except MobilekitError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        sys.exit(1 if isinstance(exc, CheckFailed) else 2)
    except usage_error as exc:  # unknown command or option, missing argument, a value that does not parse
        exc.show()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
