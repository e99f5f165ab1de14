"""Every stage of the pipeline, by name: what ``embedstream worker KIND`` and
``embedstream dev`` run (``embedstream.workers.stage.run_stage``)."""

from __future__ import annotations

from typing import Any

from embedstream.streams.names import PIPELINE
from embedstream.workers.embed import EMBED_STAGE
from embedstream.workers.index import INDEX_STAGE
from embedstream.workers.persist import PERSIST_STAGE
from embedstream.workers.stage import Stage

STAGES: dict[str, Stage[Any, Any]] = {
    stage.name: stage for stage in (EMBED_STAGE, INDEX_STAGE, PERSIST_STAGE)
}
"""The declarations, in the pipeline's order (``embedstream.streams.names.PIPELINE``)."""

if [stage.names for stage in STAGES.values()] != list(PIPELINE):  # pragma: no cover
    raise RuntimeError("every stage of PIPELINE needs exactly one declaration, in order")
