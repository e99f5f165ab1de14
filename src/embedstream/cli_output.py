"""What every ``embedstream`` command promises scripts: its exit codes and its ``--json``.

Exit codes, the same for every command:

- ``0`` done;
- ``1`` failed (nothing or not everything was done: an unknown id, a refused key, a
  service that does not answer, a job that failed);
- ``2`` usage error (a bad option or argument, an invalid or missing setting; click's
  own code for usage errors);
- ``3`` unhealthy (``embedstream status`` with a check: a lag or an oldest pending entry
  over its bound, or a group with work waiting and no live consumer).

With ``--json`` a command prints its result to stdout as one JSON document, with the
fields its table shows (and a partial result with exit code 1 where some of the work
failed); progress, prompts and messages go to stderr, an error as one JSON line
``{"error": ..., "exit_code": ...}``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    UNHEALTHY = 3


JsonOption = typer.Option("--json", help="print the result as JSON (stdout)")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_json(value: Any) -> None:
    """The command's result: one JSON document on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=_default) + "\n")
    sys.stdout.flush()


def messages(as_json: bool) -> Console:
    """Where a command's progress and messages go: stderr when stdout carries JSON."""
    return Console(stderr=True) if as_json else Console()


def fail(message: str, *, as_json: bool = False, code: ExitCode = ExitCode.FAILED) -> typer.Exit:
    """Say what failed on stderr and return the ``typer.Exit`` to raise."""
    if as_json:
        print(json.dumps({"error": message, "exit_code": int(code)}), file=sys.stderr)
    else:
        Console(stderr=True).print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    return typer.Exit(int(code))


def usage_error(message: str, option: str | None = None) -> typer.BadParameter:
    """A usage error (exit code 2, with the command's usage line), for checks that the
    argument parser cannot make. (Typer carries its own click: its exceptions, not
    click's, are the ones it turns into exit codes.)"""
    return typer.BadParameter(message, param_hint=option)
