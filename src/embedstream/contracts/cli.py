"""``embedstream schemas``: export and check the generated contracts under ``schemas/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedstream.cli_output import ExitCode, JsonOption, print_json
from embedstream.contracts import export
from embedstream.contracts.compat import check_released
from embedstream.contracts.json_schemas import all_message_schemas

schemas_app = typer.Typer(
    help="Generated message contracts: JSON Schemas and AsyncAPI under schemas/.",
    no_args_is_help=True,
)

OutDir = Annotated[
    Path, typer.Option("--out", help="the schemas folder (default: ./schemas)", file_okay=False)
]


@schemas_app.command("export")
def export_command(
    out: OutDir = Path("schemas"),
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 if the files are stale")
    ] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Write one JSON Schema per message type and asyncapi.yaml from the pydantic models."""
    if check:
        staleness = export.check(out)
        if as_json:
            print_json({"out": str(out), "up_to_date": not staleness.stale})
        if staleness.stale:
            typer.echo(staleness.describe(out), err=True)
            raise typer.Exit(ExitCode.FAILED)
        if not as_json:
            typer.echo(f"{out} is up to date")
        return
    changed = export.write(out)
    if as_json:
        print_json({"out": str(out), "changed": [str(out / rel) for rel in changed]})
        return
    for rel in changed:
        typer.echo(f"wrote {out / rel}")
    typer.echo(f"{out}: {len(changed)} file(s) changed")


@schemas_app.command("compat")
def compat_command(
    version: Annotated[str, typer.Argument(help="released contract set, e.g. v1")] = "v1",
    out: OutDir = Path("schemas"),
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Check the current models against a released contract set; exit 1 on breaking
    changes (they need a new message type version)."""
    released = export.released_schemas(out, version)
    if not released:
        typer.echo(f"no released contract set {version!r} under {out}", err=True)
        raise typer.Exit(ExitCode.USAGE)
    problems = check_released(released, all_message_schemas(), version)
    if as_json:
        print_json({"version": version, "compatible": not problems, "problems": problems})
        if problems:
            raise typer.Exit(ExitCode.FAILED)
        return
    if problems:
        typer.echo("\n".join(problems), err=True)
        raise typer.Exit(1)
    typer.echo(f"compatible with released {version}")


@schemas_app.command("release")
def release_command(
    version: Annotated[str, typer.Argument(help="name of the release, e.g. v2")],
    out: OutDir = Path("schemas"),
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="rewrite an existing release: only for a set that was never published",
        ),
    ] = False,
) -> None:
    """Copy the current JSON Schemas, AsyncAPI document and pacts to schemas/released/."""
    target = export.release(out, version, overwrite=replace)
    typer.echo(f"released {target}")
