"""``/v1/admin/dead-letters``: list with filters, read one, replay or purge one, a
selection or a filter's result (with a dry run). Who sees what:
``embedstream.api.admin_access``; the work: ``embedstream.streams.dlq_query`` and
``embedstream.streams.dlq_actions`` (the CLI's ``embedstream dlq`` uses the same)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError

from embedstream.api.admin_access import AdminForbidden, Viewer, ViewerDep
from embedstream.api.deps import RedisDep, get_settings, require_json
from embedstream.api.errors import AUTH_ERRORS, error_responses
from embedstream.api.security.route import AuthenticatedRoute
from embedstream.config import Settings
from embedstream.schemas.admin_api import (
    ActionItemOut,
    ActionOut,
    DeadLetterDetail,
    DeadLetterFilterIn,
    DeadLetterListQuery,
    DeadLetterPage,
    DeadLetterSelection,
    DeadLetterSummary,
    EntryId,
)
from embedstream.streams.dlq_actions import Action, ActionReport, Selection, act
from embedstream.streams.dlq_query import (
    DeadLetter,
    DeadLetterFilter,
    InvalidWhen,
    find_dead_letters,
    parse_when,
    read_dead_letter,
)

router = APIRouter(prefix="/v1/admin/dead-letters", tags=["admin"], route_class=AuthenticatedRoute)
SettingsDep = Annotated[Settings, Depends(get_settings)]
_ACTION_DOC = """Selected by `ids` (missing or another tenant's: `missing`) or by `filter`
(oldest first, at most 10,000 per call; `more` when more matched). `dry_run` changes
nothing and answers the count and `through_id`: send the same filter with that
`through_id` to act on exactly what was counted. Needs `admin` (its tenant's entries
only) or `operator`."""
NOT_FOUND = "dead letter not found (unknown, already replayed or purged, or another tenant's)"
SUMMARY_ERROR_CHARS = 300


def invalid(loc: tuple[str | int, ...], message: str, kind: str = "value_error") -> Exception:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": message, "input": None}])


def to_filter(
    given: DeadLetterFilterIn | None, viewer: Viewer, loc: tuple[str, ...]
) -> DeadLetterFilter:
    """The filter, with the caller's tenant applied: a tenant's admin sees only its
    tenant (naming another is a 403), an operator every tenant or the one it names."""
    given = given or DeadLetterFilterIn()
    if not viewer.operator and given.tenant not in (None, viewer.tenant):
        raise AdminForbidden(viewer.principal)
    bounds: dict[str, int | None] = {}
    for name in ("since", "until"):
        value = getattr(given, name)
        try:
            bounds[name] = None if value is None else parse_when(value)
        except InvalidWhen as exc:
            raise invalid((*loc, name), str(exc), "invalid_time") from None
    return DeadLetterFilter(
        stage=given.stage,
        type=given.type,
        stream=given.stream,
        grep=given.grep,
        job_id=given.job_id,
        document_id=given.document_id,
        since_ms=bounds["since"],
        until_ms=bounds["until"],
        tenant=viewer.tenant if not viewer.operator else given.tenant,
    )


def summary(letter: DeadLetter) -> DeadLetterSummary:
    return DeadLetterSummary(**_summary_fields(letter))


def _summary_fields(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "dead_at": letter.dead_at,
        "stream": letter.stream,
        "original_id": letter.meta.get("id"),
        "group": letter.meta.get("group"),
        "stage": letter.stage,
        "attempts": letter.attempts,
        "type": letter.type,
        "tenant": letter.tenant,
        "job_id": letter.job_id,
        "document_id": letter.document_id,
        "error_type": letter.meta.get("error_type"),
        "error": letter.error[:SUMMARY_ERROR_CHARS],
    }


def action_out(report: ActionReport) -> ActionOut:
    return ActionOut(
        action=report.action,
        dry_run=report.dry_run,
        matched=report.matched,
        done=report.done,
        through_id=report.through_id,
        more=report.more,
        results=[
            ActionItemOut(id=r.id, outcome=r.outcome, stream=r.stream, new_id=r.new_id)
            for r in report.results
        ],
    )


@router.get(
    "",
    response_model=DeadLetterPage,
    responses=error_responses(*AUTH_ERRORS, 422, 503),
    summary="List dead letters",
)
async def list_dead_letters(
    client: RedisDep,
    settings: SettingsDep,
    viewer: ViewerDep,
    query: Annotated[DeadLetterListQuery, Query()],
) -> DeadLetterPage:
    """Dead letters that match every filter given, a page at a time. Needs `admin` (the
    credential's tenant's entries only) or `operator` (every entry, those whose tenant
    cannot be read too). A page looks at no more than 20,000 entries: a sparse filter
    may answer fewer items than `limit` with a `next_cursor` to go on."""
    names = settings.redis.names()
    filt = to_filter(query, viewer, ("query",))
    page = await find_dead_letters(
        client,
        names,
        filt,
        limit=query.limit,
        cursor=query.cursor,
        newest_first=query.order == "newest",
    )
    return DeadLetterPage(
        items=[summary(letter) for letter in page.items],
        next_cursor=page.next_cursor,
        scanned=page.scanned,
        total=int(await client.xlen(names.dlq)),
    )


@router.get(
    "/{entry_id}",
    response_model=DeadLetterDetail,
    responses=error_responses(*AUTH_ERRORS, 404, 422, 503),
    summary="Read a dead letter",
)
async def get_dead_letter(
    entry_id: Annotated[EntryId, Path()],
    client: RedisDep,
    settings: SettingsDep,
    viewer: ViewerDep,
) -> DeadLetterDetail:
    """One dead letter: where it came from, the full error, its `dlq_*` metadata, its
    envelope attributes and payload. Another tenant's entry is a 404 like an unknown one."""
    letter = await read_dead_letter(client, settings.redis.names(), entry_id)
    if letter is None or not viewer.may_see(letter.tenant):
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    return DeadLetterDetail(
        **{**_summary_fields(letter), "error": letter.error},
        meta=letter.meta,
        attributes=letter.attributes,
        data=letter.payload,
        fields=letter.fields,
    )


async def _act(
    action: Action,
    body: DeadLetterSelection,
    client: RedisDep,
    settings: Settings,
    viewer: Viewer,
) -> ActionOut:
    if (body.ids is None) == (body.filter is None):
        raise invalid(("body",), "give either ids or filter (an empty filter: {} for all)")
    if body.ids is not None and body.through_id is not None:
        raise invalid(("body", "through_id"), "through_id goes with filter, not with ids")
    filt = to_filter(body.filter, viewer, ("body", "filter"))
    selection = Selection(
        filter=filt,
        ids=tuple(body.ids) if body.ids is not None else None,
        through_id=body.through_id,
    )
    report = await act(client, settings.redis.names(), action, selection, dry_run=body.dry_run)
    return action_out(report)


@router.post(
    "/replay",
    response_model=ActionOut,
    responses=error_responses(*AUTH_ERRORS, 413, 415, 422, 503),
    dependencies=[Depends(require_json)],
    summary="Replay dead letters",
    description="Put dead letters back on the stream they came from, as new entries (a "
    "replayed command is a new submission: it gets a new version), each atomically with "
    "its removal from the dead-letter stream. Fix the cause first.\n\n" + _ACTION_DOC,
)
async def replay(
    body: DeadLetterSelection, client: RedisDep, settings: SettingsDep, viewer: ViewerDep
) -> ActionOut:
    return await _act("replay", body, client, settings, viewer)


@router.post(
    "/purge",
    response_model=ActionOut,
    responses=error_responses(*AUTH_ERRORS, 413, 415, 422, 503),
    dependencies=[Depends(require_json)],
    summary="Purge dead letters",
    description="Delete dead letters for good (their documents' jobs stay failed).\n\n"
    + _ACTION_DOC,
)
async def purge(
    body: DeadLetterSelection, client: RedisDep, settings: SettingsDep, viewer: ViewerDep
) -> ActionOut:
    return await _act("purge", body, client, settings, viewer)
