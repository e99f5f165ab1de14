"""The CloudEvents 1.0 style envelope every stream entry carries.

On a stream an envelope is a flat field map: each attribute is one field and ``data``
holds the payload as JSON text, so tools in any language (and ``XRANGE`` in redis-cli)
can read the type and subject without parsing the payload.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedstream.errors import PoisonMessage

M = TypeVar("M", bound=BaseModel)


SCHEMA_VERSION = 1

Fields = Mapping[bytes, bytes]


class Envelope(BaseModel):
    """CloudEvents attributes plus ``traceparent`` and ``schemaversion``; ``data`` is JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1, description="e.g. document.upsert.v1")
    specversion: Literal["1.0"] = "1.0"
    time: datetime
    subject: str | None = Field(default=None, description="the document id, where there is one")
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
            traceparent=traceparent,
            data=payload.model_dump_json().encode(),
        )

    def to_fields(self) -> dict[str, str | bytes]:
        """The stream field map; absent optional attributes are left out."""
        fields: dict[str, str | bytes] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": self.specversion,
            "time": self.time.isoformat(),
            "datacontenttype": self.datacontenttype,
            "schemaversion": str(self.schemaversion),
            "data": self.data,
        }
        if self.subject is not None:
            fields["subject"] = self.subject
        if self.traceparent is not None:
            fields["traceparent"] = self.traceparent
        return fields

    @classmethod
    def from_fields(cls, fields: Fields) -> Envelope:
        """Decode a stream entry; anything malformed raises ``PoisonMessage``."""
        try:
            attrs = {key.decode(): value for key, value in fields.items()}
            return cls.model_validate(
                {k: (v if k == "data" else v.decode()) for k, v in attrs.items()}
            )
        except (ValidationError, UnicodeDecodeError) as exc:
            raise PoisonMessage(f"undecodable envelope: {_short(exc)}") from exc

    def payload(self, model: builtins.type[M]) -> M:
        """Validate ``data`` against a payload model; invalid data raises ``PoisonMessage``."""
        try:
            return model.model_validate_json(self.data)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid {self.type} payload: {_short(exc)}") from exc


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
    return str(exc)
