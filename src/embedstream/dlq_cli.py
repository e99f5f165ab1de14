"""``embedstream dlq list|replay|purge``: find dead letters with filters, replay them to
the stream they came from or purge them: by id, every entry (``--all``) or every entry a
filter matches, with ``--dry-run`` and a confirmation (``--yes`` for scripts). The same
code as the admin API (``embedstream.streams.dlq_query``, ``dlq_actions``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from embedstream.cli_common import cli_settings
from embedstream.cli_output import ExitCode, JsonOption, fail, messages, print_json, usage_error
from embedstream.streams.dlq_actions import MAX_IDS, Action, ActionReport, Selection, act
from embedstream.streams.dlq_query import (
    WHEN_HELP,
    DeadLetter,
    DeadLetterFilter,
    InvalidWhen,
    find_dead_letters,
    is_entry_id,
    parse_when,
)
from embedstream.streams.names import StreamNames

dlq_app = typer.Typer(
    help="Find, replay and purge dead letters (the entries workers gave up on).",
    no_args_is_help=True,
)
T = TypeVar("T")

Stage = Annotated[str | None, typer.Option(help="only this stage's (embed, index, persist)")]
Type = Annotated[
    str | None, typer.Option("--type", help="message type, with or without its version")
]
Stream = Annotated[str | None, typer.Option(help="only those dead-lettered from this stream")]
Grep = Annotated[str | None, typer.Option(help="text in the error (case-insensitive)")]
Job = Annotated[str | None, typer.Option("--job", help="only this job's")]
Document = Annotated[str | None, typer.Option("--document", help="only this document's")]
Since = Annotated[str | None, typer.Option(help=f"dead-lettered at or after: {WHEN_HELP}")]
Until = Annotated[str | None, typer.Option(help=f"dead-lettered before: {WHEN_HELP}")]
Tenant = Annotated[str | None, typer.Option(help="only this tenant's")]
Ids = Annotated[
    list[str] | None,
    typer.Argument(help="dead-letter entry ids (see `dlq list`)", show_default=False),
]
All = Annotated[
    bool, typer.Option("--all", help="every dead letter (or every one the filter matches)")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="change nothing; say what would be done")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]


def _run(body: Callable[[Any], Awaitable[T]]) -> T:
    from embedstream.adapters.redis_client import create_redis

    settings = cli_settings()

    async def run() -> T:
        client = create_redis(settings.redis)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _names() -> StreamNames:

    return cli_settings().redis.names()


def build_filter(
    *,
    stage: str | None,
    type_: str | None,
    stream: str | None,
    grep: str | None,
    job: str | None,
    document: str | None,
    since: str | None,
    until: str | None,
    tenant: str | None,
) -> DeadLetterFilter:
    bounds: dict[str, int | None] = {}
    for option, value in (("--since", since), ("--until", until)):
        try:
            bounds[option] = None if value is None else parse_when(value)
        except InvalidWhen as exc:
            raise usage_error(str(exc), option) from None
    return DeadLetterFilter(
        stage=stage,
        type=type_,
        stream=stream,
        grep=grep,
        job_id=job,
        document_id=document,
        since_ms=bounds["--since"],
        until_ms=bounds["--until"],
        tenant=tenant,
    )


def letter_row(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as ``dlq list --json`` prints it: the table's columns first."""
    return {
        "id": letter.id,
        "dead_at": letter.dead_at.isoformat(),
        "stream": letter.stream,
        "stage": letter.stage,
        "attempts": letter.attempts,
        "type": letter.type,
        "tenant": letter.tenant,
        "document_id": letter.document_id,
        "job_id": letter.job_id,
        "error_type": letter.meta.get("error_type"),
        "error": letter.error,
        "meta": letter.meta,
        "fields": letter.fields,
    }


@dlq_app.command("list")
def dlq_list(
    stage: Stage = None,
    type_: Type = None,
    stream: Stream = None,
    grep: Grep = None,
    job: Job = None,
    document: Document = None,
    since: Since = None,
    until: Until = None,
    tenant: Tenant = None,
    count: Annotated[int, typer.Option(min=1, max=10_000, help="how many at most")] = 20,
    newest: Annotated[bool, typer.Option("--newest", help="newest first")] = False,
    after: Annotated[
        str | None, typer.Option(help="start after this entry id (to page on)")
    ] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Show dead letters (oldest first): where they came from, why, after how many
    attempts. Filters combine (every one given must match)."""
    if after is not None and not is_entry_id(after):
        raise usage_error("not an entry id (<ms>-<seq>)", "--after")
    filt = build_filter(
        stage=stage, type_=type_, stream=stream, grep=grep, job=job, document=document,
        since=since, until=until, tenant=tenant,
    )  # fmt: skip
    names = _names()
    page = _run(
        lambda c: find_dead_letters(
            c, names, filt, limit=count, cursor=after, newest_first=newest, max_scan=sys.maxsize
        )
    )
    if as_json:
        print_json([letter_row(letter) for letter in page.items])
        return
    table = Table(title="dead letters")
    for column in ("id", "stream", "stage", "attempts", "type", "tenant", "error"):
        table.add_column(column, overflow="fold")
    for letter in page.items:
        table.add_row(
            letter.id,
            letter.stream or "?",
            letter.stage or "?",
            str(letter.attempts if letter.attempts is not None else "?"),
            letter.type or "?",
            letter.tenant or "?",
            letter.error[:120],
        )
    out = messages(False)
    out.print(table)
    if page.next_cursor:
        out.print(f"more: --after {page.next_cursor}")


def _selection(ids: list[str] | None, everything: bool, filt: DeadLetterFilter) -> Selection:
    filtered = bool(filt.describe())
    if ids:
        if everything or filtered:
            raise usage_error("give ids, or --all / filter options, not both")
        if bad := [i for i in ids if not is_entry_id(i)]:
            raise usage_error(f"not an entry id (<ms>-<seq>): {bad[0][:60]}")
        if len(ids) > MAX_IDS:
            raise usage_error(f"at most {MAX_IDS} ids at a time; use a filter for more")
        return Selection(filter=filt, ids=tuple(ids))
    if not everything and not filtered:
        raise usage_error("say which: ids, --all, or filter options (--stage, --grep, ...)")
    return Selection(filter=filt)


def _describe(filt: DeadLetterFilter) -> str:
    parts = [f"{k}={v}" for k, v in filt.describe().items()]
    return "matching " + ", ".join(parts) if parts else "(all)"


def run_action(
    action: Action,
    ids: list[str] | None,
    everything: bool,
    filt: DeadLetterFilter,
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    confirm_ids: bool,
) -> None:
    names = _names()
    selection = _selection(ids, everything, filt)
    out = messages(as_json)
    needs_confirmation = not dry_run and not yes and (selection.ids is None or confirm_ids)
    if needs_confirmation:
        counted = _run(lambda c: act(c, names, action, selection, dry_run=True))
        if counted.matched == 0:
            _report(counted, as_json, out)
            return
        what = (
            f"{counted.matched}{'+' if counted.more else ''} dead letter(s) "
            f"{_describe(filt) if selection.ids is None else 'by id'}"
        )
        if not sys.stdin.isatty():
            raise usage_error(f"{action} of {what} needs a confirmation: add --yes")
        if not typer.confirm(f"{action.capitalize()} {what}?", err=True):
            raise fail("cancelled: nothing was changed", as_json=as_json)
        selection = Selection(
            filter=selection.filter, ids=selection.ids, through_id=counted.through_id
        )
    report = _run(lambda c: act(c, names, action, selection, dry_run=dry_run))
    _report(report, as_json, out)
    if report.missing:
        raise typer.Exit(ExitCode.FAILED)


def _report(report: ActionReport, as_json: bool, out: Any) -> None:
    if as_json:
        print_json(
            {
                "action": report.action,
                "dry_run": report.dry_run,
                "matched": report.matched,
                "done": report.done,
                "through_id": report.through_id,
                "more": report.more,
                "results": report.results,
            }
        )
        return
    for result in report.results:
        if result.outcome == "missing":
            out.print(f"[red]{result.id}: no such dead letter[/red]")
        elif result.outcome == "replayed":
            out.print(f"{result.id} -> {result.stream} {result.new_id}")
        elif result.outcome == "purged":
            out.print(f"{result.id} purged")
        else:
            out.print(f"{result.id} would be {report.action}ed ({result.stream})")
    verb = {"replay": "replayed", "purge": "purged"}[report.action]
    summary = f"{report.matched} matched" if report.dry_run else f"{report.done} {verb}"
    out.print(summary + (" (more match: run again)" if report.more else ""))


@dlq_app.command("replay")
def dlq_replay(
    ids: Ids = None,
    everything: All = False,
    stage: Stage = None,
    type_: Type = None,
    stream: Stream = None,
    grep: Grep = None,
    job: Job = None,
    document: Document = None,
    since: Since = None,
    until: Until = None,
    tenant: Tenant = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Move dead letters back to their stream (as new entries) after fixing the cause:
    by id, or every one a filter matches (or --all) after a confirmation."""
    filt = build_filter(
        stage=stage, type_=type_, stream=stream, grep=grep, job=job, document=document,
        since=since, until=until, tenant=tenant,
    )  # fmt: skip
    run_action(
        "replay", ids, everything, filt,
        dry_run=dry_run, yes=yes, as_json=as_json, confirm_ids=False,
    )  # fmt: skip


@dlq_app.command("purge")
def dlq_purge(
    ids: Ids = None,
    everything: All = False,
    stage: Stage = None,
    type_: Type = None,
    stream: Stream = None,
    grep: Grep = None,
    job: Job = None,
    document: Document = None,
    since: Since = None,
    until: Until = None,
    tenant: Tenant = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Delete dead letters for good: by id, or every one a filter matches (or --all).
    Asks for confirmation unless --yes (without a terminal, --yes is required)."""
    filt = build_filter(
        stage=stage, type_=type_, stream=stream, grep=grep, job=job, document=document,
        since=since, until=until, tenant=tenant,
    )  # fmt: skip
    run_action(
        "purge", ids, everything, filt,
        dry_run=dry_run, yes=yes, as_json=as_json, confirm_ids=True,
    )  # fmt: skip
