"""Chroma's client and the collection: opened in cosine space without an embedding
function, bound to one embedding model (invariant 7).

- Chroma never embeds anything: collections are opened with ``embedding_function=None``
  and every write passes its embeddings.
- A collection is in cosine space and records the embedding model and dimension in its
  metadata; writing vectors of another model raises ``ModelMismatch``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.collection_configuration import (
    CreateCollectionConfiguration,
    CreateHNSWConfiguration,
)
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings as ChromaClientSettings

from embedstream.config import ChromaSettings
from embedstream.errors import PermanentError
from embedstream.logging import get_logger

MODEL_KEY = "embedding_model"
DIM_KEY = "embedding_dim"
SPACE: Final = "cosine"

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


class WrongSpace(PermanentError):
    """The collection exists but does not use cosine distance."""


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
