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
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json

from embedstream.errors import PoisonMessage
from embedstream.schemas.tenancy import TENANT_REGEX

M = TypeVar("M", bound=BaseModel)


SCHEMA_VERSION = 1

Fields = Mapping[bytes, bytes]

ATTRIBUTES_FIELD = "ce"
DATA_FIELD = "data"
_CE, _DATA = ATTRIBUTES_FIELD.encode(), DATA_FIELD.encode()


class Envelope(BaseModel):
    """CloudEvents attributes plus the extensions ``tenant``, ``traceparent`` and
    ``schemaversion``; ``data`` is JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1, description="e.g. document.upsert.v1")
    specversion: Literal["1.0"] = "1.0"
    time: datetime
    subject: str | None = Field(default=None, description="the document id, where there is one")
    tenant: str = Field(
        pattern=TENANT_REGEX,
        description="the tenant that owns the document or job (CloudEvents extension); "
        "1-64 characters of letters, digits, '.', '_' or '-'",
    )
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = None
    schemaversion: int = SCHEMA_VERSION
    data: bytes = Field(description="the payload, JSON text")

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
        """Build an envelope around a payload model with a fresh id and the current time."""
        return cls(
            id=str(uuid.uuid4()),
            source=source,
            type=type,
            time=datetime.now(UTC),
            subject=subject,
            tenant=tenant,
            traceparent=traceparent,
            data=payload.model_dump_json().encode(),
        )

    def to_fields(self) -> dict[str, str | bytes]:
        """The stream fields: ``ce`` (the attributes as one JSON object; absent optional
        attributes are left out) and ``data`` (the payload's JSON text)."""
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
        return {ATTRIBUTES_FIELD: json.dumps(attrs, separators=(",", ":")), DATA_FIELD: self.data}

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
            attrs = from_json(ce)
            if not isinstance(attrs, dict):
                raise PoisonMessage("undecodable envelope: `ce` is not a JSON object")
            attrs["data"] = data
            envelope: Envelope = cls.__pydantic_validator__.validate_python(attrs)
            return envelope
        except ValueError as exc:  # JSON, UTF-8 and validation errors alike
            raise PoisonMessage(f"undecodable envelope: {_short(exc)}") from exc

    def payload(self, model: builtins.type[M]) -> M:
        """Validate ``data`` against a payload model; invalid data raises ``PoisonMessage``."""
        try:
            return model.model_validate_json(self.data)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid {self.type} payload: {_short(exc)}") from exc


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
