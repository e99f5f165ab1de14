"""Every stage of the pipeline, by name: what ``embedstream worker KIND`` and
``embedstream dev`` run (``embedstream.workers.stage.run_stage``).

A worker process imports its own stage's code only: the embed worker never loads Chroma's
client or the PostgreSQL driver, the index worker never the model (``stage_named``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from embedstream.streams.names import EMBED, INDEX, PERSIST, PIPELINE
from embedstream.workers.stage import Stage


def _embed() -> Stage[Any, Any]:
    from embedstream.workers.embed import EMBED_STAGE

    return EMBED_STAGE


def _index() -> Stage[Any, Any]:
    from embedstream.workers.index import INDEX_STAGE

    return INDEX_STAGE


def _persist() -> Stage[Any, Any]:
    from embedstream.workers.persist import PERSIST_STAGE

    return PERSIST_STAGE


_DECLARATIONS: dict[str, Callable[[], Stage[Any, Any]]] = {
    EMBED.name: _embed,
    INDEX.name: _index,
    PERSIST.name: _persist,
}


def stage_named(name: str) -> Stage[Any, Any]:
    """The declaration of stage ``name`` (``KeyError`` for a name no stage has)."""
    return _DECLARATIONS[name]()


def all_stages() -> list[Stage[Any, Any]]:
    """Every declaration, in the pipeline's order (``embedstream.streams.names.PIPELINE``)."""
    return [stage_named(stage.name) for stage in PIPELINE]
