"""``/v1/admin``: stream and group status, jobs across tenants, and where one stream
entry is in its groups. Dead letters: ``embedstream.api.routes.admin_dead_letters``.
Who sees what: ``embedstream.api.admin_access``."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as redis
from fastapi import APIRouter, Depends, HTTPException, Path, Request

from embedstream.api.admin_access import ViewerDep
from embedstream.api.deps import RedisDep, TrackerDep, get_settings
from embedstream.api.errors import AUTH_ERRORS, error_responses
from embedstream.api.routes.jobs import job_out
from embedstream.api.security.route import AuthenticatedRoute
from embedstream.config import Settings
from embedstream.schemas.admin_api import (
    AdminJobOut,
    ConsumerOut,
    EntryId,
    EntryOut,
    GroupEntryState,
    GroupOut,
    ProblemOut,
    SessionOut,
    StatusOut,
    StreamOut,
)
from embedstream.schemas.api import is_job_id
from embedstream.streams.dlq_query import read_dead_letters
from embedstream.streams.entry_state import entry_state
from embedstream.streams.names import as_text
from embedstream.streams.status import StatusReport
from embedstream.streams.status_cache import StatusCache
from embedstream.streams.status_checks import HealthBounds, check_status, live_consumers

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=AuthenticatedRoute)
SettingsDep = Annotated[Settings, Depends(get_settings)]
STREAM_NAME_MAX = 256


def status_out(report: StatusReport, bounds: HealthBounds) -> StatusOut:
    return StatusOut(
        prefix=report.prefix,
        time_ms=report.time_ms,
        dead_letter_stream=report.dead_letter_stream,
        dead_letters_total=report.dead_letters_total,
        consumer_idle_ms=bounds.consumer_idle_ms,
        streams=[
            StreamOut(
                stream=s.stream,
                length=s.length,
                exists=s.exists,
                groups=[
                    GroupOut(
                        name=g.name,
                        lag=g.lag,
                        pending=g.pending,
                        oldest_pending_age_ms=g.oldest_pending_age_ms,
                        last_delivered_id=g.last_delivered_id,
                        entries_read=g.entries_read,
                        dead_letters=g.dead_letters,
                        live_consumers=live_consumers(g, bounds.consumer_idle_ms),
                        consumers=[
                            ConsumerOut(name=c.name, pending=c.pending, idle_ms=c.idle_ms)
                            for c in g.consumers
                        ],
                    )
                    for g in s.groups
                ],
            )
            for s in report.streams
        ],
        problems=[
            ProblemOut(stream=p.stream, group=p.group, kind=p.kind, message=p.message)
            for p in check_status(report, bounds)
        ],
    )


def status_cache(request: Request, client: redis.Redis, settings: Settings) -> StatusCache:
    """The process's ``StatusCache`` (made on first use, kept on ``app.state``)."""
    cache: StatusCache | None = getattr(request.app.state, "status_cache", None)
    if cache is None:
        names = settings.redis.names()
        cache = request.app.state.status_cache = StatusCache(client, names)
    return cache


@router.get(
    "/session",
    response_model=SessionOut,
    responses=error_responses(*AUTH_ERRORS),
    summary="Who is signed in",
)
async def get_session(viewer: ViewerDep) -> SessionOut:
    """The credential's tenant and scopes, and whether the admin endpoints show it every
    tenant (`operator`) or its own (`admin`). The console calls it to sign in."""
    principal = viewer.principal
    return SessionOut(
        tenant=principal.tenant,
        scopes=sorted(principal.scopes),
        operator=viewer.operator,
        credential_id=principal.credential_id,
    )


@router.get(
    "/status",
    response_model=StatusOut,
    responses=error_responses(*AUTH_ERRORS, 503),
    summary="Streams and consumer groups",
)
async def get_status(
    request: Request, client: RedisDep, settings: SettingsDep, viewer: ViewerDep
) -> StatusOut:
    """Per stream: length; per consumer group: lag, pending, oldest pending age, entries
    read, dead letters, consumers with their idle time; and the groups that have work
    waiting and no live consumer (none seen within the visibility timeout). Counts and
    consumer names only, no tenant's data: `admin` and `operator` see the same. A reading
    is shared by the process's callers for a second; new streams appear within 30 s."""
    report = await status_cache(request, client, settings).read()
    bounds = HealthBounds(consumer_idle_ms=settings.consumer.visibility_timeout_ms)
    return status_out(report, bounds)


@router.get(
    "/jobs/{job_id}",
    response_model=AdminJobOut,
    responses=error_responses(*AUTH_ERRORS, 404, 422, 503),
    summary="A job, across tenants",
)
async def get_admin_job(job_id: str, tracker: TrackerDep, viewer: ViewerDep) -> AdminJobOut:
    """A job's state and, per document, each stage's state and the failure if any, with
    the job's tenant. `operator`: any tenant's job; `admin`: its tenant's (another
    tenant's job is a 404 like an unknown one)."""
    status = await tracker.status(job_id, tenant=viewer.tenant) if is_job_id(job_id) else None
    if status is None:
        raise HTTPException(
            status_code=404,
            detail="job not found (unknown, another tenant's, or older than the 7-day retention)",
        )
    return AdminJobOut(**job_out(status).model_dump(), tenant=status.tenant)


@router.get(
    "/streams/{stream}/entries/{entry_id}",
    response_model=EntryOut,
    responses=error_responses(*AUTH_ERRORS, 404, 422, 503),
    summary="Where an entry is in its groups",
)
async def get_entry(
    stream: Annotated[str, Path(min_length=1, max_length=STREAM_NAME_MAX)],
    entry_id: Annotated[EntryId, Path()],
    client: RedisDep,
    settings: SettingsDep,
    viewer: ViewerDep,
) -> EntryOut:
    """Per consumer group of the stream: `waiting` (not delivered yet), `pending`
    (delivered, not acknowledged: who holds it, after how many deliveries) or `done`;
    and the dead letters made from it. Follows a replayed dead letter (its `new_id`).
    The entry may be gone (consumed entries are trimmed): its position in each group
    still answers. A stream of this deployment only; an existing entry of another
    tenant is a 404."""
    names = settings.redis.names()
    kind = as_text(await client.type(stream))
    if (
        not (stream.startswith(f"{names.base}:") or names.view_of_stream(stream))
        or stream == names.dlq
        or kind
        not in (
            "stream",
            "none",
        )
    ):
        raise HTTPException(status_code=404, detail="not a stream of this deployment")
    state = await entry_state(client, names, stream, entry_id)
    if state.exists and not viewer.may_see(state.tenant):
        raise HTTPException(status_code=404, detail="entry not found")
    dead = state.dead_letters
    if not viewer.operator:
        # dead letters of an entry that is gone: only those the viewer may see
        found = await read_dead_letters(client, names, dead)
        dead = [i for i in dead if i in found and viewer.may_see(found[i].tenant)]
    return EntryOut(
        stream=state.stream,
        id=state.id,
        exists=state.exists,
        type=state.type if viewer.may_see(state.tenant) else None,
        groups=[
            GroupEntryState(
                group=g.group, state=g.state, consumer=g.consumer, deliveries=g.deliveries
            )
            for g in state.groups
        ],
        dead_letters=dead,
    )
