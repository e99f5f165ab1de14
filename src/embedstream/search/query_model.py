"""The query side of the embedding model in a search process: the workers' embedder
(``load_embedder`` with the same settings: model and backend, so the same vector the
embed stage makes for a text), loaded on first use, off the event loop, once however
many searches wait for it; a failed load is remembered for ``LOAD_RETRY_S`` seconds.

``SearchUnavailable`` is search's 503: a stable, short message for the client, with
the details in the log."""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Final

from embedstream.config import Settings
from embedstream.logging import get_logger

if TYPE_CHECKING:  # numpy: imported by the first search, not by the API's start
    import numpy as np
    import numpy.typing as npt

    from embedstream.adapters.embedder import Embedder

log = get_logger("embedstream.search")

LOAD_RETRY_S: Final = 30.0
RETRY_AFTER_S: Final = 5


class SearchUnavailable(Exception):
    """Search cannot answer now (503). ``public`` is the stable, short message for the
    client; the details went to the log."""

    def __init__(self, code: str, public: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(public)
        self.code = code
        self.public = public
        self.retry_after_s = retry_after_s


NOT_AVAILABLE = "search is not available on this server"


class QueryModel:
    """``live_index``: the process reads an index other processes write, which an
    embedded Chroma folder does not allow (a process sees the vectors that were there
    when it opened it): it then refuses to search, with the reason in its log. The CLI
    opens the index for one search and may read a folder."""

    def __init__(self, settings: Settings, *, live_index: bool = True) -> None:
        self.settings = settings
        self.live_index = live_index
        self._embedder: Embedder | None = None
        self._load_lock = asyncio.Lock()
        self._failed_at = -math.inf
        self._refusal_logged = False

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()

    def _check_index_mode(self) -> None:
        if self.live_index and not self.settings.chroma.chroma_url:
            if self._refusal_logged:
                raise SearchUnavailable("index_not_shared", NOT_AVAILABLE)
            self._refusal_logged = True
            log.error(
                "search refused: the vector index is an embedded Chroma folder "
                "(EMBEDSTREAM_CHROMA_PATH), which another process cannot read live; set "
                "EMBEDSTREAM_CHROMA_URL to the Chroma server the index workers write to",
            )
            raise SearchUnavailable("index_not_shared", NOT_AVAILABLE)

    async def embedder(self) -> Embedder:
        """The query embedder, loaded once (off the event loop)."""
        if self._embedder is not None:
            return self._embedder
        self._check_index_mode()
        async with self._load_lock:
            if self._embedder is None:
                if time.monotonic() - self._failed_at < LOAD_RETRY_S:
                    raise SearchUnavailable(
                        "model_unavailable", NOT_AVAILABLE, retry_after_s=int(LOAD_RETRY_S)
                    )
                started = time.perf_counter()
                try:
                    from embedstream.adapters.embedder import load_embedder

                    self._embedder = await load_embedder(self.settings.embed)
                except Exception as exc:
                    self._failed_at = time.monotonic()
                    log.error(
                        "search refused: the query embedding model could not be loaded; the "
                        "API needs what an ONNX embed worker has (the onnx extra, the model "
                        "package, its export in EMBEDSTREAM_MODEL_CACHE): see the README, "
                        "Searching",
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    raise SearchUnavailable(
                        "model_unavailable", NOT_AVAILABLE, retry_after_s=int(LOAD_RETRY_S)
                    ) from None
                log.info(
                    "search model loaded",
                    model=self._embedder.name,
                    backend=self._embedder.backend,
                    dim=self._embedder.dim,
                    load_s=round(time.perf_counter() - started, 2),
                )
        return self._embedder

    async def embed(self, text: str) -> npt.NDArray[np.float32]:
        """The query's vector, as the embed stage would make it for this text."""
        embedder = await self.embedder()
        vectors = await embedder.encode([text])
        vector: npt.NDArray[np.float32] = vectors[0]
        return vector
