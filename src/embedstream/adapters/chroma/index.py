"""``ChromaIndex``: one collection, with every Chroma call on one dedicated thread so that
workers never block their event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from embedstream.adapters.chroma.collection import (
    ModelMismatch,
    bind_model,
    create_client,
    open_collection,
    recorded_model,
)
from embedstream.adapters.chroma.folder import WriterLock, open_with_retries
from embedstream.adapters.chroma.writes import IndexWrite, apply_writes
from embedstream.config import ChromaSettings
from embedstream.errors.chroma import is_unreachable
from embedstream.logging import get_logger

T = TypeVar("T")

log = get_logger("embedstream.chroma")


class ChromaIndex:
    """One collection, with every Chroma call on one dedicated thread.

    Chroma's client is synchronous; running it on a single-thread executor keeps the
    event loop free (invariant 9) and serializes the writes of in-flight batches.

    An embedded folder is opened under its open lock, and a writer first takes the
    folder's writer lock (``acquire_writer``); see ``embedstream.adapters.chroma.folder``.
    """

    def __init__(self, settings: ChromaSettings) -> None:
        self.settings = settings
        self.name = settings.chroma_collection
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chroma")
        self._client: ClientAPI | None = None
        self._collection: Collection | None = None
        self._model: tuple[str, int] | None = None
        self._writer: WriterLock | None = None

    @property
    def collection(self) -> Collection:
        if self._collection is None:
            raise RuntimeError("ChromaIndex.open() was not awaited")
        return self._collection

    @property
    def embedded(self) -> bool:
        return not self.settings.chroma_url

    async def acquire_writer(
        self, stop: asyncio.Event | None = None, *, check_every_s: float = 1.0
    ) -> bool:
        """Take the embedded folder's writer lock (server mode: nothing to take, True).
        Without ``stop`` answer at once; with it, wait as a standby until the lock is free
        (True) or ``stop`` is set (False)."""
        if not self.embedded:
            return True
        if self._writer is None:
            self._writer = WriterLock(self.settings.chroma_path)
        writer = self._writer
        if await self.call(writer.try_acquire):
            return True
        if stop is None:
            return False
        log.warning(
            "standby: another process writes this embedded Chroma folder; waiting to take "
            "over when it exits. Several active index replicas need Chroma server mode "
            "(EMBEDSTREAM_CHROMA_URL)",
            folder=str(self.settings.chroma_path),
            lock=str(writer.path),
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), check_every_s)
            if not stop.is_set() and await self.call(writer.try_acquire):
                log.info("took over the embedded Chroma folder", folder=str(writer.folder))
                return True
        return False

    async def open(self, stop: asyncio.Event | None = None) -> Collection:
        """Create the client and open (or create) the collection. With ``stop``, a
        Chroma server that does not answer (yet) is waited for with backoff until ``stop``
        is set (then the last error is raised)."""
        if self._collection is None:
            self._collection = await self._open_waiting(stop)
            self._model = recorded_model(self._collection)
            log.info(
                "chroma collection open",
                collection=self.name,
                mode="persistent" if self.embedded else "http",
                where=self.settings.chroma_url or str(self.settings.chroma_path),
                model=self._model,
            )
        return self._collection

    async def _open_waiting(self, stop: asyncio.Event | None) -> Collection:
        failures = 0
        while True:
            try:
                return await self.call(self._open)
            except Exception as exc:
                if stop is None or stop.is_set() or not is_unreachable(exc):
                    raise
                failures += 1
                delay = min(10.0, 0.2 * 2 ** (failures - 1))
                log.warning(
                    "chroma unavailable, retrying",
                    where=self.settings.chroma_url,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    def _open(self) -> Collection:
        if not self.embedded:
            self._client = create_client(self.settings)
            return open_collection(self._client, self.name)

        def create() -> tuple[ClientAPI, Collection]:
            client = create_client(self.settings)
            return client, open_collection(client, self.name)

        self._client, collection = open_with_retries(self.settings.chroma_path, create)
        return collection

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the Chroma thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def require_model(self, model: str, dim: int) -> None:
        """Raise ``ModelMismatch`` unless the collection is for ``model``/``dim`` (binding
        it on first use)."""
        if self._model is None:
            client = self._client
            if client is None:
                raise RuntimeError("ChromaIndex.open() was not awaited")
            self._model = await self.call(bind_model, client, self.name, model, dim)
            self._collection = await self.call(
                lambda: client.get_collection(self.name, embedding_function=None)
            )
        if self._model != (model, dim):
            raise ModelMismatch(self.name, self._model, (model, dim))

    async def reset(self) -> Collection:
        """Drop the collection and create it empty (for a rebuild from PostgreSQL)."""
        await self.open()
        client = self._client
        if client is None:
            raise RuntimeError("ChromaIndex.open() was not awaited")
        await self.call(client.delete_collection, self.name)
        self._collection, self._model = None, None
        return await self.open()

    async def heartbeat(self) -> None:
        """Ask the server (or the embedded store) whether it answers; on a thread of its
        own, so that a readiness probe does not wait behind a long write."""
        client = self._client
        if client is None:
            raise RuntimeError("ChromaIndex.open() was not awaited")
        await asyncio.to_thread(client.heartbeat)

    async def apply(self, writes: Sequence[IndexWrite]) -> dict[str, Exception]:
        return await self.call(apply_writes, self.collection, writes)

    def close(self) -> None:
        """Wait for running calls, stop the thread and release the writer lock."""
        self._executor.shutdown(wait=True)
        if self._writer is not None:
            self._writer.release()
