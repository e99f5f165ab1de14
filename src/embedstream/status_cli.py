"""``embedstream status``: per stream and group, length, lag, pending, oldest pending age,
consumers and dead letters; with a check, exit code 3 when unhealthy (for scripts, cron
and probes)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from embedstream.cli_common import cli_settings, console
from embedstream.cli_output import ExitCode, JsonOption, print_json
from embedstream.config import Settings
from embedstream.streams.status import StatusReport, collect_status
from embedstream.streams.status_checks import HealthBounds, Problem, check_status


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f}s"
    return f"{ms / 60_000:.1f}m"


def print_status(report: StatusReport, problems: list[Problem], console: Console) -> None:
    table = Table(title=f"embedstream streams (prefix {report.prefix})")
    for column in ("stream", "length", "group", "lag", "pending", "oldest pending", "dlq"):
        left = column in ("stream", "group")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    table.add_column("consumers (idle)", min_width=18, overflow="fold")
    for stream in report.streams:
        if not stream.groups:
            length = str(stream.length) if stream.exists else "(none)"
            table.add_row(stream.stream, length, "-", "-", "-", "-", "-", "")
        for group in stream.groups:
            consumers = ", ".join(f"{c.name} ({_age(c.idle_ms)})" for c in group.consumers)
            table.add_row(
                stream.stream,
                str(stream.length),
                group.name,
                "?" if group.lag is None else str(group.lag),
                str(group.pending),
                _age(group.oldest_pending_age_ms),
                str(group.dead_letters),
                consumers or "-",
            )
    console.print(table)
    console.print(f"dead letters in {report.dead_letter_stream}: {report.dead_letters_total}")
    for problem in problems:
        console.print(f"[yellow]unhealthy: {problem.stream} / {problem.group}: {problem.message}")


def status_dict(report: StatusReport, problems: list[Problem]) -> dict[str, Any]:
    return {**report.as_dict(), "problems": [p.as_dict() for p in problems]}


def status(
    as_json: Annotated[bool, JsonOption] = False,
    watch: Annotated[float, typer.Option(help="refresh every N seconds (0: once)")] = 0.0,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="exit 3 when a group has work waiting and no live consumer (or is over "
            "a --fail-over-* bound)",
        ),
    ] = False,
    fail_over_lag: Annotated[
        int | None,
        typer.Option(min=0, help="exit 3 when a group's lag is over N entries (implies --check)"),
    ] = None,
    fail_over_age: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="exit 3 when a group's oldest pending entry is older than SECONDS "
            "(implies --check)",
        ),
    ] = None,
    consumer_idle: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="a consumer idle longer than SECONDS is not live (default: the "
            "visibility timeout, EMBEDSTREAM_VISIBILITY_TIMEOUT_MS)",
        ),
    ] = None,
) -> None:
    """Per stream and group: length, lag, pending, oldest pending age, consumers, DLQ.
    Exit code 3 (with --check or a --fail-over-* bound) when a group is unhealthy. With
    --watch and --json, one reading per line (JSON Lines)."""
    from embedstream.adapters.redis_client import create_redis

    settings: Settings = cli_settings()
    bounds = HealthBounds(
        max_lag=fail_over_lag,
        max_oldest_pending_ms=None if fail_over_age is None else int(fail_over_age * 1000),
        consumer_idle_ms=int(consumer_idle * 1000)
        if consumer_idle is not None
        else settings.consumer.visibility_timeout_ms,
    )
    checking = check or fail_over_lag is not None or fail_over_age is not None

    async def read() -> StatusReport:
        client = create_redis(settings.redis)
        try:
            return await collect_status(client, settings.redis.names())
        finally:
            await client.aclose()

    while True:
        report = asyncio.run(read())
        problems = check_status(report, bounds)
        if as_json and watch > 0:  # one reading per line (JSON Lines)
            print(json.dumps(status_dict(report, problems)), flush=True)
        elif as_json:
            print_json(status_dict(report, problems))
        else:
            print_status(report, problems, console)
        if watch <= 0:
            break
        time.sleep(watch)
    if checking and problems:
        raise typer.Exit(ExitCode.UNHEALTHY)
