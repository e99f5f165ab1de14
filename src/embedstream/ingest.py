"""``embedstream ingest``: post a folder of text files through the API and wait for the
job results, with progress bars. A producer's tool: it speaks HTTP only."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

SUFFIXES = {".txt", ".md"}


@dataclass
class JobOutcome:
    job_id: str
    state: str
    documents: int
    failures: list[dict[str, Any]]


def find_documents(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def _document(root: Path, path: Path) -> dict[str, Any]:
    relative = path.relative_to(root).as_posix()
    return {
        "id": relative,
        "text": path.read_text(encoding="utf-8", errors="replace"),
        "metadata": {"path": relative, "bytes": path.stat().st_size},
    }


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def post_batches(
    client: httpx.Client, root: Path, files: list[Path], batch: int, console: Console
) -> list[str]:
    jobs: list[str] = []
    with _progress(console) as progress:
        task = progress.add_task("posting", total=len(files))
        for start in range(0, len(files), batch):
            chunk = files[start : start + batch]
            body = {"documents": [_document(root, p) for p in chunk]}
            response = _post_with_retry(client, body)
            jobs.append(response.json()["job_id"])
            progress.advance(task, len(chunk))
    return jobs


def _post_with_retry(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    for attempt in range(8):
        response = client.post("/v1/documents", json=body)
        if response.status_code in (429, 503):
            time.sleep(float(response.headers.get("Retry-After", 1)) * (1 + attempt / 4))
            continue
        if response.status_code != 202:
            raise SystemExit(
                f"the API refused a batch: HTTP {response.status_code}: {response.text[:500]}"
            )
        return response
    raise SystemExit("the API kept answering 429/503; is the pipeline running?")


def wait_for_jobs(
    client: httpx.Client, jobs: list[str], timeout: float, console: Console
) -> list[JobOutcome]:
    outcomes: dict[str, JobOutcome] = {}
    deadline = time.monotonic() + timeout
    with _progress(console) as progress:
        task = progress.add_task("jobs finished", total=len(jobs))
        while len(outcomes) < len(jobs) and time.monotonic() < deadline:
            for job_id in jobs:
                if job_id in outcomes:
                    continue
                response = client.get(f"/v1/jobs/{job_id}")
                if response.status_code == 429:  # rate limited: wait as told, then go on
                    time.sleep(float(response.headers.get("Retry-After", 1)))
                    continue
                if response.status_code != 200:
                    raise SystemExit(
                        f"could not read job {job_id}: HTTP {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                body = response.json()
                if body.get("state") in ("completed", "failed"):
                    failures = [
                        {"document_id": d.get("id"), **(d.get("error") or {})}
                        for d in body.get("documents", [])
                        if d.get("state") == "failed"
                    ]
                    outcomes[job_id] = JobOutcome(
                        job_id, body["state"], int(body.get("total", 0)), failures
                    )
                    progress.advance(task)
            if len(outcomes) < len(jobs):
                time.sleep(0.5)
    return [outcomes.get(j, JobOutcome(j, "timed out", 0, [])) for j in jobs]


class NoDocuments(ValueError):
    """The folder holds no .txt or .md file."""


@dataclass
class IngestSummary:
    """What ``embedstream ingest`` did: documents posted, each job's outcome (``queued``
    without waiting), the time from the first POST to the last result."""

    documents: int
    elapsed_s: float
    jobs: list[JobOutcome]

    @property
    def ok(self) -> bool:
        """Every job completed (or, without waiting, was accepted)."""
        return all(o.state in ("completed", "queued") for o in self.jobs)


def ingest_folder(
    root: Path, *, url: str, batch: int, wait: bool, timeout: float, console: Console
) -> IngestSummary:
    """Post every document under ``root`` and, with ``wait``, wait for the jobs'
    results; progress goes to ``console``."""
    files = find_documents(root)
    if not files:
        raise NoDocuments(f"no .txt or .md files under {root}")
    key = os.environ.get("EMBEDSTREAM_API_KEY", "")  # see `embedstream keys create`
    headers = {"X-API-Key": key} if key else {}
    with httpx.Client(base_url=url, timeout=30.0, headers=headers) as client:
        started = time.monotonic()
        jobs = post_batches(client, root, files, batch, console)
        console.print(f"posted {len(files)} documents in {len(jobs)} job(s)")
        if wait:
            outcomes = wait_for_jobs(client, jobs, timeout, console)
        else:
            outcomes = [JobOutcome(job, "queued", 0, []) for job in jobs]
        elapsed = time.monotonic() - started
    return IngestSummary(len(files), elapsed, outcomes)


def print_summary(summary: IngestSummary, console: Console) -> None:
    table = Table(title=f"{summary.documents} documents, {summary.elapsed_s:.1f}s")
    for column in ("job", "state", "documents", "failures"):
        table.add_column(column)
    for o in summary.jobs:
        failures = "; ".join(f"{f.get('document_id')}: {f.get('error')}" for f in o.failures)
        table.add_row(o.job_id, o.state, str(o.documents), failures or "-")
    console.print(table)
