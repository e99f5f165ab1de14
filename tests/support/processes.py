"""Start ``consumer_proc.py`` as a child process and read what it left in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import redis.asyncio as redis

from embedstream.streams.names import StreamNames
from tests.support.streams import wait_until

CONSUMER_SCRIPT = Path(__file__).with_name("consumer_proc.py")


class ConsumerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, names: StreamNames, name: str) -> None:
        self.proc = proc
        self.names = names
        self.name = name

    @classmethod
    async def start(
        cls, redis_url: str, names: StreamNames, name: str, *options: str
    ) -> ConsumerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CONSUMER_SCRIPT),
            redis_url,
            names.prefix,
            name,
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc, names, name)

    async def started_ids(self, client: redis.Redis) -> list[str]:
        raw = await client.lrange(self.names.key("started", self.name), 0, -1)
        return [r.decode() for r in raw]

    async def wait_mid_batch(self, client: redis.Redis, within: float = 30) -> list[str]:
        """Wait until the handler has started its first batch; its ids."""

        async def started() -> bool:
            if self.proc.returncode is not None:
                out = await self.output()
                raise AssertionError(f"consumer exited early ({self.proc.returncode}):\n{out}")
            return bool(await self.started_ids(client))

        await wait_until(started, within=within, what=f"{self.name} to start a batch")
        return await self.started_ids(client)

    async def sigterm_mid_batch(self, client: redis.Redis) -> tuple[list[str], int, str]:
        """Wait for the first batch, send SIGTERM, wait for the exit: (batch ids, exit
        code, output). The process is killed if anything goes wrong."""
        try:
            in_batch = await self.wait_mid_batch(client)
            self.proc.send_signal(signal.SIGTERM)
            rc = await self.wait_exit()
            return in_batch, rc, await self.output()
        finally:
            self.kill()

    async def wait_exit(self, within: float = 30) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.kill()
            raise AssertionError(f"{self.name} did not exit:\n{await self.output()}") from None

    async def output(self) -> str:
        assert self.proc.stdout is not None
        with contextlib.suppress(TimeoutError):
            data = await asyncio.wait_for(self.proc.stdout.read(), 5)
            return data.decode(errors="replace")
        return "<no output>"

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
