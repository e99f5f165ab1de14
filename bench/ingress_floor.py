"""The floor the ingress is measured against (``bench.ingress``): the least a FastAPI
service that writes documents to Redis Streams does per request.

A bare FastAPI app on the same uvicorn settings as the ingress (``UVICORN_OPTIONS``)
that validates the same body with pydantic (the same field types and bounds, no
credential, no tenant, no job record, no idempotency, no envelope) and writes one XADD
per document in one pipeline (one round trip).

    python -m bench.ingress_floor --port 8001 --stream bench:floor
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from embedstream.api.app import UVICORN_OPTIONS


class FloorDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, min_length=1, max_length=512)
    text: str = Field(min_length=1)
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)


class FloorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    documents: list[FloorDocument] = Field(min_length=1)


class FloorAccepted(BaseModel):
    accepted: int


def create_floor_app(redis_url: str, stream: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = redis.Redis.from_url(redis_url)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/documents", status_code=202)
    async def upsert(body: FloorRequest, request: Request) -> FloorAccepted:
        client: redis.Redis = request.app.state.redis
        pipe = client.pipeline(transaction=False)
        for doc in body.documents:
            pipe.xadd(stream, {"data": doc.model_dump_json()})
        ids = await pipe.execute()
        return FloorAccepted(accepted=len(ids))

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_floor_app(args.redis_url, args.stream),
        host="127.0.0.1",
        port=args.port,
        **UVICORN_OPTIONS,  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    main()
