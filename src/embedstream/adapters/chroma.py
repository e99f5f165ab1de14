"""Chroma: the derived vector index (PostgreSQL is the system of record).

Everything here is a plain synchronous function over a Chroma ``Collection`` (what
``embedstream reindex`` needs to rebuild the index from PostgreSQL), plus ``ChromaIndex``,
which owns the client and runs every call on one dedicated thread so that workers never
block their event loop.

Rules kept here:

- Chroma never embeds anything: collections are opened with ``embedding_function=None``
  and every write passes its embeddings.
- A collection is in cosine space and records the embedding model and dimension in its
  metadata; writing vectors of another model raises ``ModelMismatch`` (invariant 7).
- A document is (tenant, document id). Chunk ids are deterministic,
  ``{tenant}/{document_id}:{index}``; each chunk's metadata carries its tenant, document
  id, chunk index, version, job id and content hash next to the user's metadata, and
  every read, update and delete of a document's chunks filters by tenant and document id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import chromadb
import httpx
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.collection_configuration import (
    CreateCollectionConfiguration,
    CreateHNSWConfiguration,
)
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings as ChromaClientSettings

from embedstream.adapters.chroma_folder import WriterLock, open_with_retries
from embedstream.config import ChromaSettings
from embedstream.errors import PermanentError, RetryableError
from embedstream.logging import get_logger
from embedstream.schemas.commands import MetadataValue
from embedstream.schemas.tenancy import chunk_id, document_key
from embedstream.schemas.vectors import Vector

T = TypeVar("T")

MODEL_KEY = "embedding_model"
DIM_KEY = "embedding_dim"
SPACE: Final = "cosine"
MAX_BATCH = 1000

# Keys embedstream writes on every chunk; they win over user metadata of the same name.
TENANT = "tenant"
DOCUMENT_ID = "document_id"
CHUNK_INDEX = "chunk_index"
VERSION = "version"
JOB_ID = "job_id"
CONTENT_HASH = "content_hash"

ChunkMetadata = dict[str, MetadataValue]

log = get_logger("embedstream.chroma")


INT8_SUFFIX = "+int8"  # embedder.INT8_SUFFIX (not imported: it would load the embedder)


class ModelMismatch(PermanentError):
    """Vectors of one model were about to be written to a collection of another.

    Backends count: torch and onnx (fp32) give the same vectors and record the same model
    name; onnx-int8 records ``<name>+int8`` and is another model here."""

    code = "model_mismatch"
    public_message = "the index holds vectors of another embedding model"

    def __init__(self, collection: str, recorded: tuple[str, int], got: tuple[str, int]) -> None:
        super().__init__(
            f"collection {collection!r} holds vectors of model {recorded[0]!r} "
            f"(dim {recorded[1]}), but this event carries model {got[0]!r} (dim {got[1]}); "
            f"refusing to mix models in one collection.{_variant_note(recorded[0], got[0])} "
            f"Either point the index workers at a new collection (EMBEDSTREAM_CHROMA_COLLECTION) "
            f"for the new model and re-submit the documents, or rebuild this one: drop it and "
            f"run `embedstream reindex` once PostgreSQL holds the new model's vectors for "
            f"every document."
        )
        self.collection = collection
        self.recorded = recorded
        self.got = got


def _variant_note(recorded: str, got: str) -> str:
    """Say so when the two names are one model folder on backends with other vectors."""
    if recorded.removesuffix(INT8_SUFFIX) != got.removesuffix(INT8_SUFFIX):
        return ""
    int8, full = (recorded, got) if recorded.endswith(INT8_SUFFIX) else (got, recorded)
    return (
        f" {int8!r} is the int8-quantized ONNX variant (EMBEDSTREAM_BACKEND=onnx-int8) of "
        f"{full!r} (torch or onnx): its vectors differ, so collections keep them apart; "
        f"setting EMBEDSTREAM_BACKEND back to what built the collection also resolves this."
    )


class ChunksNotIndexed(RetryableError):
    """A metadata-only update found the document's chunks missing or of other content."""


class WrongSpace(PermanentError):
    """The collection exists but does not use cosine distance."""


# -- records -----------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk as Chroma stores it."""

    id: str
    embedding: Vector
    metadata: Mapping[str, MetadataValue]
    document: str | None = None


__all__ = ["chunk_id", "document_key"]


def chunk_metadata(
    user: Mapping[str, MetadataValue],
    *,
    tenant: str,
    document_id: str,
    index: int,
    version: int,
    job_id: str,
    content_hash: str,
) -> ChunkMetadata:
    """User metadata plus embedstream's own keys (which take precedence)."""
    return {
        **user,
        TENANT: tenant,
        DOCUMENT_ID: document_id,
        CHUNK_INDEX: index,
        VERSION: version,
        JOB_ID: job_id,
        CONTENT_HASH: content_hash,
    }


# -- client and collection ---------------------------------------------------------


def create_client(settings: ChromaSettings) -> ClientAPI:
    """``HttpClient`` when ``chroma_url`` is set, else a ``PersistentClient`` on
    ``chroma_path``; telemetry off either way."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    client_settings = ChromaClientSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        url = urlsplit(settings.chroma_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            # the value is not repeated: a URL may carry credentials
            raise ValueError("EMBEDSTREAM_CHROMA_URL must look like http(s)://host[:port]")
        ssl = url.scheme == "https"
        return chromadb.HttpClient(
            host=url.hostname,
            port=url.port or (443 if ssl else 8000),
            ssl=ssl,
            settings=client_settings,
        )
    settings.chroma_path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_path), settings=client_settings)


def open_collection(client: ClientAPI, name: str) -> Collection:
    """Get or create ``name`` in cosine space, without an embedding function."""
    configuration = CreateCollectionConfiguration(hnsw=CreateHNSWConfiguration(space=SPACE))
    collection = client.get_or_create_collection(
        name, configuration=configuration, embedding_function=None
    )
    space = _space(collection)
    if space is not None and space != SPACE:
        raise WrongSpace(
            f"collection {name!r} uses distance {space!r}, embedstream needs {SPACE!r}: use "
            f"another collection (EMBEDSTREAM_CHROMA_COLLECTION) or drop and reindex it"
        )
    return collection


def _space(collection: Collection) -> str | None:
    config: Mapping[str, Any] = collection.configuration or {}
    for index in ("hnsw", "spann"):
        section = config.get(index)
        if isinstance(section, Mapping) and section.get("space"):
            return str(section["space"])
    legacy = (collection.metadata or {}).get("hnsw:space")
    return str(legacy) if legacy else None


def recorded_model(collection: Collection) -> tuple[str, int] | None:
    """(model, dim) the collection records, or None while it records none."""
    metadata = collection.metadata or {}
    model, dim = metadata.get(MODEL_KEY), metadata.get(DIM_KEY)
    if model is None or dim is None:
        return None
    return str(model), int(dim)


def bind_model(client: ClientAPI, name: str, model: str, dim: int) -> tuple[str, int]:
    """Make sure collection ``name`` is for ``model``/``dim``: record them if it records no
    model yet, raise ``ModelMismatch`` if it records another. Reads fresh metadata."""
    collection = client.get_collection(name, embedding_function=None)
    recorded = recorded_model(collection)
    if recorded is None:
        collection.modify(metadata={**(collection.metadata or {}), MODEL_KEY: model, DIM_KEY: dim})
        log.info("collection bound to model", collection=name, model=model, dim=dim)
        # Another replica may have bound it at the same moment: trust what was stored.
        recorded = recorded_model(client.get_collection(name, embedding_function=None))
    if recorded != (model, dim):
        raise ModelMismatch(name, recorded or ("?", 0), (model, dim))
    return recorded


# -- reading and writing chunks ----------------------------------------------------


def document_chunks(
    collection: Collection, documents: Sequence[tuple[str, str]]
) -> dict[str, dict[int, tuple[str, Mapping[str, Any]]]]:
    """The chunks stored for each (tenant, document id): document key
    (``{tenant}/{document_id}``) -> chunk index -> (id, metadata). Each query filters by
    the tenant and the document ids."""
    found: dict[str, dict[int, tuple[str, Mapping[str, Any]]]] = {}
    by_tenant: dict[str, list[str]] = {}
    for tenant, document_id in dict.fromkeys(documents):
        by_tenant.setdefault(tenant, []).append(document_id)
    for tenant, document_ids in by_tenant.items():
        for part in _parts(document_ids, 500):
            where: Any = {"$and": [{TENANT: tenant}, {DOCUMENT_ID: {"$in": part}}]}
            reply = collection.get(where=where, include=["metadatas"])
            for record_id, metadata in zip(reply["ids"], reply["metadatas"] or [], strict=True):
                if metadata is None:
                    continue
                key = document_key(tenant, str(metadata.get(DOCUMENT_ID)))
                index = int(str(metadata.get(CHUNK_INDEX, -1)))
                found.setdefault(key, {})[index] = (record_id, metadata)
    return found


def upsert_chunks(
    collection: Collection, chunks: Sequence[ChunkRecord], *, batch_size: int | None = None
) -> int:
    """Upsert chunks in as few calls as Chroma's batch limit allows; returns the count.
    Documents are sent only when every chunk of a call has one."""
    size = batch_size or _max_batch(collection)
    for part in _parts(chunks, size):
        documents = [c.document for c in part]
        collection.upsert(
            ids=[c.id for c in part],
            embeddings=np.stack([c.embedding for c in part]),
            metadatas=[dict(c.metadata) for c in part],
            documents=[d for d in documents if d is not None]
            if all(d is not None for d in documents)
            else None,
        )
    return len(chunks)


def update_metadatas(
    collection: Collection,
    ids: Sequence[str],
    metadatas: Sequence[Mapping[str, MetadataValue | None]],
) -> int:
    """Metadata-only update (``None`` values delete keys); embeddings stay as they are."""
    size = _max_batch(collection)
    for start in range(0, len(ids), size):
        collection.update(
            ids=list(ids[start : start + size]),
            metadatas=[dict(m) for m in metadatas[start : start + size]],
        )
    return len(ids)


def delete_ids(collection: Collection, ids: Sequence[str]) -> int:
    size = _max_batch(collection)
    for part in _parts(list(ids), size):
        collection.delete(ids=part)
    return len(ids)


def delete_documents(collection: Collection, tenant: str, document_ids: Sequence[str]) -> int:
    """Delete every chunk of these documents of ``tenant`` (no other tenant's); returns
    how many chunks there were."""
    stored = document_chunks(collection, [(tenant, d) for d in document_ids])
    return delete_ids(collection, [cid for chunks in stored.values() for cid, _ in chunks.values()])


def _max_batch(collection: Collection) -> int:
    """Chroma's own limit, capped where bigger calls stop paying off (MEASUREMENTS.md)."""
    try:
        limit = int(collection._client.get_max_batch_size())
    except Exception:  # pragma: no cover - a server that does not say
        limit = MAX_BATCH
    return max(1, min(limit, MAX_BATCH))


def _parts(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# -- document writes in batches ----------------------------------------------------


@dataclass(frozen=True)
class _Document:
    tenant: str
    document_id: str

    @property
    def key(self) -> str:
        """``{tenant}/{document_id}``: what ``apply_writes`` reports refusals under."""
        return document_key(self.tenant, self.document_id)


@dataclass(frozen=True)
class ReplaceDocument(_Document):
    """The document's chunks become exactly ``chunks`` (surplus old chunks go)."""

    chunks: Sequence[ChunkRecord]


@dataclass(frozen=True)
class RefreshDocument(_Document):
    """Same content, new metadata: chunk ``n`` gets ``metadatas[n]``. Requires the chunks
    of ``content_hash`` to be stored already (``ChunksNotIndexed`` otherwise)."""

    content_hash: str
    metadatas: Sequence[ChunkMetadata]


@dataclass(frozen=True)
class RemoveDocument(_Document):
    pass


DocumentWrite = ReplaceDocument | RefreshDocument | RemoveDocument


@dataclass
class _Calls:
    upserts: list[ChunkRecord]
    update_ids: list[str]
    updates: list[dict[str, MetadataValue | None]]
    deletes: list[str]


def apply_writes(collection: Collection, writes: Sequence[DocumentWrite]) -> dict[str, Exception]:
    """Apply document writes with one read and at most one upsert, update and delete call
    (per Chroma batch limit). Returns the documents (by document key) that were not
    written, with why; an exception from Chroma itself propagates (nothing is known to be
    written then)."""
    stored = document_chunks(collection, [(w.tenant, w.document_id) for w in writes])
    calls = _Calls([], [], [], [])
    refused: dict[str, Exception] = {}
    for write in writes:
        have = stored.get(write.key, {})
        if isinstance(write, ReplaceDocument):
            calls.upserts.extend(write.chunks)
            keep = len(write.chunks)
        elif isinstance(write, RefreshDocument):
            error = _plan_refresh(write, have, calls)
            if error is not None:
                refused[write.key] = error
                continue
            keep = len(write.metadatas)
        else:
            keep = 0
        calls.deletes.extend(cid for index, (cid, _) in have.items() if index >= keep)
    if calls.upserts:
        upsert_chunks(collection, calls.upserts)
    if calls.update_ids:
        update_metadatas(collection, calls.update_ids, calls.updates)
    if calls.deletes:
        delete_ids(collection, calls.deletes)
    return refused


def _plan_refresh(
    write: RefreshDocument,
    have: Mapping[int, tuple[str, Mapping[str, Any]]],
    calls: _Calls,
) -> Exception | None:
    missing = [
        n
        for n in range(len(write.metadatas))
        if n not in have or have[n][1].get(CONTENT_HASH) != write.content_hash
    ]
    if missing:
        return ChunksNotIndexed(
            f"document {write.document_id!r} of tenant {write.tenant!r}: {len(missing)} of "
            f"{len(write.metadatas)} chunks of content {write.content_hash[:12]} are not "
            f"indexed yet (its earlier embedding has not reached the index); will retry"
        )
    for n, metadata in enumerate(write.metadatas):
        cid, old = have[n]
        stale: dict[str, MetadataValue | None] = {k: None for k in old if k not in metadata}
        calls.update_ids.append(cid)
        calls.updates.append({**stale, **metadata})
    return None


# -- the async face ----------------------------------------------------------------


class ChromaIndex:
    """One collection, with every Chroma call on one dedicated thread.

    Chroma's client is synchronous; running it on a single-thread executor keeps the
    event loop free (invariant 9) and serializes the writes of in-flight batches.

    An embedded folder is opened under its open lock, and a writer first takes the
    folder's writer lock (``acquire_writer``); see ``embedstream.adapters.chroma_folder``.
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
                if stop is None or stop.is_set() or not _unreachable(exc):
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

    async def apply(self, writes: Sequence[DocumentWrite]) -> dict[str, Exception]:
        return await self.call(apply_writes, self.collection, writes)

    def close(self) -> None:
        """Wait for running calls, stop the thread and release the writer lock."""
        self._executor.shutdown(wait=True)
        if self._writer is not None:
            self._writer.release()


def _unreachable(error: BaseException) -> bool:
    """A Chroma server that is down or not up yet (chromadb raises ValueError for it)."""
    if isinstance(error, ConnectionError | TimeoutError | httpx.TransportError):
        return True
    return "could not connect" in str(error).lower()
