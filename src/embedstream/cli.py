"""The ``embedstream`` command: api | worker KIND | exporter | dev | status | dlq | migrate |
init | ingest | search | reindex | keys | token | schemas | model. Exit codes and ``--json``:
``embedstream.cli_output``."""

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
from rich.table import Table

from embedstream.api.security.cli import keys_app, token_app
from embedstream.cli_common import cli_settings, console
from embedstream.cli_output import (
    ExitCode,
    JsonOption,
    fail,
    messages,
    print_json,
    usage_error,
)
from embedstream.config import Settings
from embedstream.contracts.cli import schemas_app
from embedstream.dlq_cli import dlq_app
from embedstream.model_cli import model_app
from embedstream.status_cli import status
from embedstream.streams.names import PIPELINE, StreamNames

app = typer.Typer(
    help="embedstream: an event-driven embedding pipeline on Redis Streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(dlq_app, name="dlq")
app.command()(status)
app.add_typer(schemas_app, name="schemas")
app.add_typer(keys_app, name="keys")
app.add_typer(token_app, name="token")
app.add_typer(model_app, name="model")
# Piped output (logs, CI) gets a fixed width wide enough for the status table.
T = TypeVar("T")


if TYPE_CHECKING:
    StageKind = str
else:
    # the stages' names, as a choice (typer reads an Enum); the declarations behind them
    # (embedstream.workers.stages) are imported by the commands that run them
    StageKind = Enum("StageKind", [(stage.name, stage.name) for stage in PIPELINE], type=str)


def _names(settings: Settings) -> StreamNames:
    return settings.redis.names()


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

    run_api(cli_settings())


@app.command()
def exporter(
    host: Annotated[
        str, typer.Option(envvar="EMBEDSTREAM_EXPORTER_HOST", help="bind address")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="EMBEDSTREAM_EXPORTER_PORT", min=0, max=65_535, help="port")
    ] = 9465,
) -> None:
    """Serve the queue gauges (lag, pending, oldest pending age, consumers, dead letters
    per stream and group) for Prometheus at /metrics. Run one per deployment."""
    from embedstream.metrics.exporter import run_exporter

    run_exporter(cli_settings(), host, port)


@app.command()
def worker(
    kind: Annotated[StageKind, typer.Argument(help="which stage to run")],
    burst: Annotated[bool, typer.Option(help="process what is there, then exit")] = False,
) -> None:
    """Run one worker replica. Start more processes to scale a stage."""
    settings = cli_settings()

    async def main() -> None:
        from embedstream.streams.runner import install_stop_signals
        from embedstream.workers.stage import run_stage
        from embedstream.workers.stages import stage_named

        stop = asyncio.Event()
        install_stop_signals(stop)
        await run_stage(stage_named(kind), settings, stop, burst=burst)

    from embedstream.streams.partitions import ClusterNotConfigured, PartitionsChanged

    try:
        asyncio.run(main())
    except (ClusterNotConfigured, PartitionsChanged) as exc:  # settings to fix: no traceback
        raise fail(str(exc)) from None


@app.command()
def migrate(
    streams: Annotated[
        bool, typer.Option(help="also create the streams and consumer groups (`init`)")
    ] = True,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Apply PostgreSQL migrations (safe to run from several processes at once), then
    create every stream and consumer group (`embedstream init`)."""
    settings = cli_settings()
    from embedstream.adapters.postgres.migrate import migrate as apply

    applied = asyncio.run(apply(settings.postgres.database_url, settings.postgres.database_schema))
    made = _init_streams(settings) if streams else []
    if as_json:
        print_json({"applied": applied, "streams": made})
        return
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")
    _print_streams(made)


@app.command()
def init(as_json: Annotated[bool, JsonOption] = False) -> None:
    """Create every stream and every stage's consumer group (embedder on ingest; indexer
    and persister on embedded), so lag is readable before any worker runs. Idempotent:
    what exists is left as it is."""
    made = _init_streams(cli_settings())
    if as_json:
        print_json({"streams": made})
    else:
        _print_streams(made)


def _init_streams(settings: Settings) -> list[dict[str, Any]]:
    from embedstream.streams.init import init_streams
    from embedstream.streams.partitions import ClusterNotConfigured

    names = _names(settings)
    try:
        items = _with_redis(settings, lambda client: init_streams(client, names))
    except ClusterNotConfigured as exc:
        raise fail(str(exc)) from None
    return [{"stream": i.stream, "group": i.group, "created": i.created} for i in items]


def _print_streams(made: list[dict[str, Any]]) -> None:
    for item in made:
        what = f"{item['stream']} group {item['group']}" if item["group"] else item["stream"]
        console.print(f"{'created' if item['created'] else 'exists '} {what}")


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
    settings = cli_settings()
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
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Post a folder of documents in batches and wait for the job results (exit 1 when a
    job failed or did not finish in time)."""
    import httpx

    from embedstream.ingest import NoDocuments, ingest_folder, print_summary

    cli_settings()
    out = messages(as_json) if as_json else console
    try:
        summary = ingest_folder(path, url=url, batch=batch, wait=wait, timeout=timeout, console=out)
    except NoDocuments as exc:
        raise fail(str(exc), as_json=as_json) from None
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the API at {url}: {exc}", as_json=as_json) from None
    if as_json:
        print_json(
            {
                "documents": summary.documents,
                "elapsed_s": round(summary.elapsed_s, 3),
                "jobs": summary.jobs,
            }
        )
    else:
        print_summary(summary, console)
    if not summary.ok:
        raise typer.Exit(ExitCode.FAILED)


class SearchMode(Enum):
    vector = "vector"
    hybrid = "hybrid"


def _json_option(name: str, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise usage_error(f"not valid JSON ({exc.msg}, column {exc.colno})", name) from None


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
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Search one tenant's chunks as `POST /v1/search` does (same code, same filters):
    nearest chunks in Chroma, text and metadata from PostgreSQL."""
    from embedstream.schemas.tenancy import InvalidTenant, check_tenant
    from embedstream.search import FilterError, SearchQuery, parse_where, parse_where_document
    from embedstream.search.oneshot import search_once

    try:
        check_tenant(tenant)
    except InvalidTenant as exc:
        raise usage_error(str(exc), "--tenant") from None
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
        raise usage_error(exc.message, exc.field) from None
    settings = cli_settings()
    hits = asyncio.run(search_once(settings, tenant, request)).hits
    if as_json:
        print_json([asdict(hit) for hit in hits])
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
    batch: Annotated[int, typer.Option(help="chunks per Chroma upsert", min=1)] = 500,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Rebuild the Chroma collection from PostgreSQL. Stop the index workers first."""
    from rich.progress import Progress

    from embedstream.reindex import reindex as run_reindex

    settings = cli_settings()
    with Progress(console=messages(as_json) if as_json else console) as progress:
        task = progress.add_task("reindexing", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            written = asyncio.run(run_reindex(settings, batch_size=batch, progress=report))
        except RuntimeError as exc:  # MixedModels, or an index worker holds the folder
            raise fail(str(exc), as_json=as_json) from exc
    collection = settings.chroma.chroma_collection
    if as_json:
        print_json({"collection": collection, "chunks": written})
    else:
        console.print(f"rebuilt {collection!r}: {written} chunks")


def main() -> None:
    """The console script: exit codes 0 done, 1 failed, 2 usage error (an invalid
    setting too), 3 unhealthy (``embedstream.cli_output``)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from embedstream.config import InvalidSettings

    try:
        app()
    except InvalidSettings as exc:  # names the variables and rules, never the values
        print(f"embedstream: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE) from None
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError) as exc:
        # a service that does not answer: say which, without a traceback
        print(f"embedstream: cannot reach a service: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.FAILED) from None


@app.command()
def keda(
    out: Annotated[
        Path | None,
        typer.Option(help="write triggers-{stage}.json into this folder (default: print them)"),
    ] = None,
) -> None:
    """KEDA triggers for this deployment's stream layout (EMBEDSTREAM_STREAM_PREFIX,
    EMBEDSTREAM_PARTITIONS, cluster or not): one JSON patch per stage's ScaledObject, for a
    kustomize overlay of deploy/k8s/keda (see deploy/k8s/keda-cluster)."""
    from embedstream.deploy.keda import patch_file, trigger_patch

    names = _names(cli_settings())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for stage in PIPELINE:
        text = json.dumps(trigger_patch(names, stage), indent=2) + "\n"
        if out is None:
            typer.echo(f"// {patch_file(stage)}\n{text}", nl=False)
            continue
        (out / patch_file(stage)).write_text(text)
        console.print(f"wrote {out / patch_file(stage)}")
