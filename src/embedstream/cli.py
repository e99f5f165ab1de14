"""The ``embedstream`` command: api | worker KIND | dev | status | dlq | migrate | init |
ingest | model export."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from embedstream.api.security.cli import keys_app, token_app
from embedstream.config import Settings
from embedstream.contracts.cli import schemas_app
from embedstream.logging import configure_logging
from embedstream.model_cli import model_app
from embedstream.streams.names import PIPELINE, StreamNames

app = typer.Typer(
    help="embedstream: an event-driven embedding pipeline on Redis Streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
dlq_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(schemas_app, name="schemas")
app.add_typer(keys_app, name="keys")
app.add_typer(token_app, name="token")
app.add_typer(model_app, name="model")
# Piped output (logs, CI) gets a fixed width wide enough for the status table.
console = Console() if sys.stdout.isatty() else Console(width=140)
T = TypeVar("T")


if TYPE_CHECKING:
    StageKind = str
else:
    # the stages' names, as a choice (typer reads an Enum); the declarations behind them
    # (embedstream.workers.stages) are imported by the commands that run them
    StageKind = Enum("StageKind", [(stage.name, stage.name) for stage in PIPELINE], type=str)


def _settings() -> Settings:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    settings = Settings()
    configure_logging(settings.app.log_level, json=settings.app.json_logs)
    return settings


def _names(settings: Settings) -> StreamNames:
    return StreamNames(settings.redis.stream_prefix)


def _with_redis(settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    from embedstream.adapters.redis_client import create_redis

    async def run() -> T:
        client = create_redis(settings.redis)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


@app.command()
def api() -> None:
    """Run the HTTP ingress (uvicorn)."""
    from embedstream.api.app import run_api

    run_api(_settings())


@app.command()
def worker(
    kind: Annotated[StageKind, typer.Argument(help="which stage to run")],
    burst: Annotated[bool, typer.Option(help="process what is there, then exit")] = False,
) -> None:
    """Run one worker replica. Start more processes to scale a stage."""
    settings = _settings()

    async def main() -> None:
        from embedstream.streams.runner import install_stop_signals
        from embedstream.workers.stage import run_stage
        from embedstream.workers.stages import stage_named

        stop = asyncio.Event()
        install_stop_signals(stop)
        await run_stage(stage_named(kind), settings, stop, burst=burst)

    asyncio.run(main())


@app.command()
def migrate(
    streams: Annotated[
        bool, typer.Option(help="also create the streams and consumer groups (`init`)")
    ] = True,
) -> None:
    """Apply PostgreSQL migrations (safe to run from several processes at once), then
    create every stream and consumer group (`embedstream init`)."""
    settings = _settings()
    from embedstream.adapters.postgres.migrate import migrate as apply

    applied = asyncio.run(apply(settings.postgres.database_url, settings.postgres.database_schema))
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")
    if streams:
        _init_streams(settings)


@app.command()
def init() -> None:
    """Create every stream and every stage's consumer group (embedder on ingest; indexer
    and persister on embedded), so lag is readable before any worker runs. Idempotent:
    what exists is left as it is."""
    _init_streams(_settings())


def _init_streams(settings: Settings) -> None:
    from embedstream.streams.init import init_streams

    names = _names(settings)
    for item in _with_redis(settings, lambda client: init_streams(client, names)):
        what = f"{item.stream} group {item.group}" if item.group else item.stream
        console.print(f"{'created' if item.created else 'exists '} {what}")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    watch: Annotated[float, typer.Option(help="refresh every N seconds (0: once)")] = 0.0,
) -> None:
    """Per stream and group: length, lag, pending, oldest pending age, consumers, DLQ."""
    from embedstream.streams.status import collect_status

    settings = _settings()
    while True:
        report = _with_redis(settings, lambda c: collect_status(c, _names(settings)))
        if as_json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            _print_status(report)
        if watch <= 0:
            return
        time.sleep(watch)


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f}s"
    return f"{ms / 60_000:.1f}m"


def _print_status(report: Any) -> None:
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


@dlq_app.command("list")
def dlq_list(
    count: Annotated[int, typer.Option(help="how many")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show dead letters: where they came from, why, after how many attempts."""
    from embedstream.schemas.envelope import attributes_of
    from embedstream.streams.dlq import list_dead_letters

    settings = _settings()
    views = _with_redis(settings, lambda c: list_dead_letters(c, _names(settings), count=count))
    if as_json:
        print(json.dumps([asdict(v) for v in views], indent=2))
        return
    table = Table(title="dead letters")
    for column in ("id", "stream", "stage", "attempts", "type", "error"):
        table.add_column(column)
    for v in views:
        table.add_row(
            v.id,
            v.meta.get("stream", "?"),
            v.meta.get("stage", "?"),
            v.meta.get("attempts", "?"),
            str(attributes_of(v.fields).get("type", "?")),
            v.meta.get("error", "")[:120],
        )
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[str], typer.Argument(help="dead-letter entry ids (see `dlq list`)")],
) -> None:
    """Move dead letters back to their stream (as new entries) after fixing the cause."""
    from embedstream.streams.dlq import replay_dead_letter

    settings = _settings()

    async def replay_all(client: Any) -> int:
        failures = 0
        for entry_id in ids:
            moved = await replay_dead_letter(client, _names(settings), entry_id)
            if moved is None:
                console.print(f"[red]{entry_id}: no such dead letter[/red]")
                failures += 1
            else:
                console.print(f"{entry_id} -> {moved[0]} {moved[1]}")
        return failures

    if _with_redis(settings, replay_all):
        raise typer.Exit(1)


def dev_worker_env(env: dict[str, str], index: int, health_port: int | None) -> dict[str, str]:
    """The environment of `dev`'s worker number ``index``: a health endpoint on
    ``health_port + index`` when asked for, none otherwise (whatever the caller's
    environment says: the workers share one host)."""
    child = dict(env)
    child.pop("EMBEDSTREAM_HEALTH_PORT", None)
    if health_port is not None:
        child["EMBEDSTREAM_HEALTH_PORT"] = str(health_port + index)
    return child


@app.command()
def dev(
    replicas: Annotated[int, typer.Option(help="replicas of each worker")] = 1,
    health_port: Annotated[
        int | None,
        typer.Option(help="serve each worker's /healthz and /readyz on PORT, PORT+1, ..."),
    ] = None,
    chroma_server: Annotated[
        bool,
        typer.Option(
            help="serve the Chroma folder with `chroma run` for every process (without "
            "EMBEDSTREAM_CHROMA_URL): the API can then search what the index worker writes"
        ),
    ] = True,
) -> None:
    """Run the API and one replica of each worker as child processes (Ctrl-C stops all)."""
    settings = _settings()
    workers = [["worker", stage.name] for stage in PIPELINE for _ in range(replicas)]
    env = dict(os.environ)
    procs: list[subprocess.Popen[bytes]] = []
    chroma: subprocess.Popen[bytes] | None = None
    if settings.chroma.chroma_url is None:
        settings.chroma.chroma_path.mkdir(parents=True, exist_ok=True)
        if chroma_server:
            chroma, url = _start_chroma_server(settings.chroma.chroma_path)
            if url is not None:
                env["EMBEDSTREAM_CHROMA_URL"] = url
    procs.append(subprocess.Popen([sys.executable, "-m", "embedstream", "api"], env=env))
    for index, command in enumerate(workers):
        child_env = dev_worker_env(env, index, health_port)
        command = [sys.executable, "-m", "embedstream", *command]
        procs.append(subprocess.Popen(command, env=child_env))
    console.print(
        f"started api on http://{settings.api.host}:{settings.api.port} and "
        f"{len(procs) - 1} workers; Ctrl-C stops them"
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for proc in procs:
            if proc.poll() is not None:
                console.print(f"[red]{proc.args!r} exited with {proc.returncode}; stopping[/red]")
                stopping, code = True, 1
        time.sleep(0.3)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.consumer.drain_timeout_s + 5
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    if chroma is not None:  # last: the index workers have finished their writes
        chroma.terminate()
        try:
            chroma.wait(timeout=10)
        except subprocess.TimeoutExpired:
            chroma.kill()
    raise typer.Exit(code)


def _start_chroma_server(folder: Path) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """``chroma run`` on ``folder`` on a free local port, once it answers; (None, None)
    when it cannot start (the processes then use the folder, and the API cannot search)."""
    import shutil
    import socket

    import httpx

    binary = Path(sys.executable).with_name("chroma")
    found = str(binary) if binary.exists() else shutil.which("chroma")
    if found is None:
        console.print("[yellow]no `chroma` command: the API will not search[/yellow]")
        return None, None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = (folder / "chroma-server.log").open("ab")
    proc = subprocess.Popen(
        [found, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                console.print(f"chroma server on {url} (folder {folder})")
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    console.print(f"[yellow]chroma server did not start (see {folder}/chroma-server.log)[/yellow]")
    return None, None


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="folder of .txt/.md files", exists=True)],
    url: Annotated[str, typer.Option(help="API base URL")] = "http://127.0.0.1:8000",
    batch: Annotated[int, typer.Option(help="documents per request")] = 50,
    wait: Annotated[bool, typer.Option(help="wait for every job to finish")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for results")] = 600.0,
) -> None:
    """Post a folder of documents in batches and wait for the job results."""
    from embedstream.ingest import ingest_folder

    _settings()
    ok = ingest_folder(path, url=url, batch=batch, wait=wait, timeout=timeout, console=console)
    if not ok:
        raise typer.Exit(1)


class SearchMode(Enum):
    vector = "vector"
    hybrid = "hybrid"


def _json_option(name: str, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        console.print(f"[red]{name}: not valid JSON ({exc.msg}, column {exc.colno})[/red]")
        raise typer.Exit(2) from None


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    tenant: Annotated[str, typer.Option("--tenant", help="whose documents to search")],
    limit: Annotated[int, typer.Option(help="how many chunks", min=1, max=100)] = 5,
    mode: Annotated[SearchMode, typer.Option(help="vector, or hybrid (+ full text)")] = (
        SearchMode.vector
    ),
    where: Annotated[
        str | None,
        typer.Option(help='metadata filter as JSON, e.g. \'{"year": {"$gte": 2020}}\''),
    ] = None,
    where_document: Annotated[
        str | None,
        typer.Option(help='chunk text filter as JSON, e.g. \'{"$contains": "XADD"}\''),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Search one tenant's chunks as `POST /v1/search` does (same code, same filters):
    nearest chunks in Chroma, text and metadata from PostgreSQL."""
    from embedstream.schemas.tenancy import InvalidTenant, check_tenant
    from embedstream.search import FilterError, SearchQuery, parse_where, parse_where_document
    from embedstream.search.oneshot import search_once

    try:
        check_tenant(tenant)
    except InvalidTenant as exc:
        console.print(f"[red]--tenant: {exc}[/red]")
        raise typer.Exit(2) from None
    try:
        request = SearchQuery(
            text=query,
            limit=limit,
            mode=mode.value,
            where=parse_where(_json_option("--where", where), ("--where",)),
            where_document=parse_where_document(
                _json_option("--where-document", where_document), ("--where-document",)
            ),
        )
    except FilterError as exc:
        console.print(f"[red]{exc.field}: {exc.message}[/red]")
        raise typer.Exit(2) from None
    settings = _settings()
    hits = asyncio.run(search_once(settings, tenant, request)).hits
    if as_json:
        print(json.dumps([asdict(hit) for hit in hits], indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{mode.value} search: {query!r}")
    for column in ("document", "chunk", "score", "distance", "text"):
        table.add_column(column)
    for hit in hits:
        text = " ".join((hit.text or "").split())
        distance = "-" if hit.distance is None else f"{hit.distance:.3f}"
        table.add_row(
            hit.document_id,
            str(hit.chunk_index),
            f"{hit.score:.4f}",
            distance,
            text[:140] + ("…" * (len(text) > 140)),
        )
    console.print(table)


@app.command()
def reindex(
    batch: Annotated[int, typer.Option(help="chunks per Chroma upsert")] = 500,
) -> None:
    """Rebuild the Chroma collection from PostgreSQL. Stop the index workers first."""
    from rich.progress import Progress

    from embedstream.reindex import MixedModels
    from embedstream.reindex import reindex as run_reindex

    settings = _settings()
    with Progress(console=console) as progress:
        task = progress.add_task("reindexing", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            written = asyncio.run(run_reindex(settings, batch_size=batch, progress=report))
        except MixedModels as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    console.print(f"rebuilt {settings.chroma.chroma_collection!r}: {written} chunks")


def main() -> None:
    from embedstream.config import InvalidSettings

    try:
        app()
    except InvalidSettings as exc:  # names the variables and rules, never the values
        print(f"embedstream: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
