"""A private ``redis-server`` on a free port with its own data directory (AOF on), that a
test may stop and start again. The shared server on 6379 is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from pathlib import Path

import redis.asyncio as redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.binary = binary
        self.dir = directory
        self.port = port or free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log = directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, within: float = 20) -> None:
        assert self.proc is None or self.proc.returncode is not None, "already running"
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        probe = redis.Redis.from_url(self.url)
        try:
            deadline = asyncio.get_running_loop().time() + within
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
                try:
                    if await probe.ping():
                        return
                except Exception:  # not up yet (refused, or loading the AOF)
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                await asyncio.sleep(0.05)
        finally:
            await probe.aclose()

    async def stop(self, within: float = 20) -> None:
        """SIGTERM (Redis flushes the AOF and exits), then wait for the exit."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
