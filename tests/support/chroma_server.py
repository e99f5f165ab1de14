"""A ``chroma run`` server (shipped in the chromadb wheel) on a free port with a folder of
its own, for tests of Chroma's server mode (several index replicas)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import chromadb
import httpx
from chromadb.config import Settings as ChromaClientSettings

from tests.support.redis_server import free_port


@contextlib.contextmanager
def chroma_server(folder: Path, within: float = 60.0) -> Iterator[str]:
    """Start a server on ``folder``; yields its URL; stops it on exit."""
    binary = Path(sys.executable).parent / "chroma"
    if not binary.exists():
        found = shutil.which("chroma")
        if found is None:
            raise RuntimeError("the `chroma` command (from the chromadb wheel) is not installed")
        binary = Path(found)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (folder / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(binary), "run", "--path", str(folder / "data"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + within
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"chroma server did not start: {(folder / 'server.log').read_text()}"
                    )
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def server_records(url: str, collection: str = "embedstream") -> dict[str, dict[str, Any]]:
    """id -> metadata of every record of a collection on a server."""
    parts = urlsplit(url)
    client = chromadb.HttpClient(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 8000,
        settings=ChromaClientSettings(anonymized_telemetry=False),
    )
    got = client.get_collection(collection, embedding_function=None).get(include=["metadatas"])
    return {i: dict(m or {}) for i, m in zip(got["ids"], got["metadatas"] or [], strict=True)}
