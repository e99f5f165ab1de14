"""A real Chroma server (``chroma run``, from the chromadb wheel) on a free port, for the
tests where several processes share one index (the API reads what the index workers
write: an embedded Chroma folder is only read live by the process that writes it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def chroma_binary() -> Path:
    binary = Path(sys.executable).parent / "chroma"
    if binary.exists():
        return binary
    found = shutil.which("chroma")
    if found is None:
        raise RuntimeError("the `chroma` command (from the chromadb wheel) is not installed")
    return Path(found)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def chroma_server(folder: Path) -> Iterator[str]:
    """``chroma run --path folder`` until the block ends; yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = folder / "chroma-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(chroma_binary()), "run", "--path", str(folder / "data"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chroma server did not start: {log_path.read_text()}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
