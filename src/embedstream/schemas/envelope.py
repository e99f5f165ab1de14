"""The CloudEvents 1.0 style envelope every stream entry carries.

On a stream an envelope is two fields: ``ce`` holds the CloudEvents attributes as one
small JSON object and ``data`` the payload as JSON text. Two fields rather than one per
attribute keep reading cheap (every field is a separate reply element to parse), while
the type and subject stay readable in ``XRANGE`` and cheap to decode in any language
without touching the payload.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

import msgspec
from msgspec import Meta
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedstream.errors import PoisonMessage
from embedstream.schemas.tenancy import TENANT_REGEX, TENANT_REGEX_PY, TENANT_RULE

M = TypeVar("M", bound=BaseModel)


SCHEMA_VERSION = 1

Fields = Mapping[bytes, bytes]

ATTRIBUTES_FIELD = "ce"
DATA_FIELD = "data"
_CE, _DATA = ATTRIBUTES_FIELD.encode(), DATA_FIELD.encode()


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """CloudEvents attributes plus the extensions ``tenant``, ``traceparent`` and
    ``schemaversion``; ``data`` is the payload's JSON text.

    A msgspec struct rather than a pydantic model: every consumer decodes one envelope
    per message, and msgspec decodes and validates the attributes in ~0.5 us where the
    pydantic model took ~3 us (a third of the runtime's whole per-message cost in
    ``bench/runtime.py``). ``EnvelopeSchema`` below is the
    same envelope as a pydantic model, for the JSON Schema in the contracts; a test
    keeps the two in step. Payloads stay pydantic models (``payload``).

    Constraints are checked when an envelope is decoded (``from_fields``) or built with
    ``wrap``; the plain constructor does not validate.
    """

    id: Annotated[str, Meta(min_length=1)]
    source: Annotated[str, Meta(min_length=1)]
    type: Annotated[str, Meta(min_length=1)]
    time: datetime
    # msgspec matches patterns with re.search: \A...\Z, since ^...$ would let "acme\n" in
    tenant: Annotated[str, Meta(pattern=TENANT_REGEX_PY)]
    data: bytes = b""
    """The payload's JSON text (the ``data`` stream field; empty only while decoding ``ce``)."""
    specversion: Literal["1.0"] = "1.0"
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = None
    schemaversion: int = SCHEMA_VERSION

    @classmethod
    def wrap(
        cls,
        type: str,
        payload: BaseModel,
        *,
        source: str,
        tenant: str,
        subject: str | None = None,
        traceparent: str | None = None,
    ) -> Envelope:
        """Build an envelope around a payload model with a fresh id and the current time;
        invalid attributes (an empty type, a malformed tenant) raise ``ValueError``."""
        return cls.new(
            type,
            data=payload.model_dump_json().encode(),
            source=source,
            tenant=tenant,
            subject=subject,
            traceparent=traceparent,
        )

    @classmethod
    def new(
        cls,
        type: str,
        *,
        data: bytes,
        source: str,
        tenant: str,
        subject: str | None = None,
        traceparent: str | None = None,
        time: datetime | None = None,
    ) -> Envelope:
        """``wrap`` for a payload that is JSON text already (``data``), or that is not known
        yet (empty: the job events, whose payload the job bookkeeping writes when the job
        ends; see ``embedstream.jobs.results``); ``time`` defaults to now."""
        attrs: dict[str, object] = {
            "id": str(uuid.uuid4()),
            "source": source,
            "type": type,
            "time": time or datetime.now(UTC),
            "subject": subject,
            "tenant": tenant,
            "traceparent": traceparent,
            "data": data,
        }
        try:
            return msgspec.convert(attrs, Envelope)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid envelope: {exc}") from exc

    def attributes(self) -> str:
        """The ``ce`` stream field: the attributes as one JSON object (absent optional
        attributes are left out)."""
        attrs: dict[str, str | int] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": self.specversion,
            "time": self.time.isoformat(),
            "datacontenttype": self.datacontenttype,
            "tenant": self.tenant,
            "schemaversion": self.schemaversion,
        }
        if self.subject is not None:
            attrs["subject"] = self.subject
        if self.traceparent is not None:
            attrs["traceparent"] = self.traceparent
        return json.dumps(attrs, separators=(",", ":"))

    def to_fields(self) -> dict[str, str | bytes]:
        """The stream fields: ``ce`` (``attributes``) and ``data`` (the payload's JSON
        text)."""
        return {ATTRIBUTES_FIELD: self.attributes(), DATA_FIELD: self.data}

    @classmethod
    def from_fields(cls, fields: Fields) -> Envelope:
        """Decode a stream entry; anything malformed raises ``PoisonMessage``. Fields other
        than ``ce`` and ``data`` (e.g. ``replayed_from``) are ignored."""
        ce, data = fields.get(_CE), fields.get(_DATA)
        if ce is None or data is None:
            missing = [
                name for name, v in ((ATTRIBUTES_FIELD, ce), (DATA_FIELD, data)) if v is None
            ]
            raise PoisonMessage(f"undecodable envelope: missing stream field(s) {missing}")
        try:
            attrs = _decode_attributes(ce)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PoisonMessage(f"undecodable envelope: {exc}") from exc
        if attrs.data:
            raise PoisonMessage("undecodable envelope: `ce` holds `data`; it is a field of its own")
        # the struct was made here and nobody else holds it: set data in place, no copy
        msgspec.structs.force_setattr(attrs, "data", data)
        return attrs

    def payload(self, model: builtins.type[M]) -> M:
        """Validate ``data`` against a payload model; invalid data raises ``PoisonMessage``."""
        try:
            return model.model_validate_json(self.data)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid {self.type} payload: {_short(exc)}") from exc


_decode_attributes = msgspec.json.Decoder(Envelope).decode


class EnvelopeSchema(BaseModel):
    """``Envelope`` as a pydantic model, for the JSON Schema of the contracts (the
    descriptions live here). ``tests/unit/test_envelope.py`` checks that both accept and
    refuse the same envelopes."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, title="Envelope")

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1, description="e.g. document.upsert.v1")
    specversion: Literal["1.0"] = "1.0"
    time: datetime
    subject: str | None = Field(default=None, description="the document id, where there is one")
    tenant: str = Field(
        pattern=TENANT_REGEX,
        description="the tenant that owns the document or job (CloudEvents extension); "
        + TENANT_RULE,
    )
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = None
    schemaversion: int = SCHEMA_VERSION
    data: bytes = Field(description="the payload, JSON text")


def attributes_of(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, object]:
    """The CloudEvents attributes of raw stream fields, without validating anything
    (``{}`` when there is no readable ``ce``): for tools that show what an entry is."""
    ce = fields.get(_CE) if _CE in fields else fields.get(ATTRIBUTES_FIELD)  # type: ignore[call-overload]
    try:
        attrs = json.loads(ce) if ce is not None else {}
    except ValueError:
        return {}
    return attrs if isinstance(attrs, dict) else {}


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
    return str(exc)
