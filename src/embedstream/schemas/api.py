"""Request and response models of the HTTP ingress.

Requests and responses never share a model. Request models check the shape of each
document (types, blank text, id syntax, metadata values); limits that come from
settings (documents per request, characters per document) and duplicate ids are
checked by the route, so their errors can name the exact field.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from embedstream.schemas.commands import MetadataValue

DOCUMENT_ID_MAX_CHARS = 512
METADATA_KEY_MAX_CHARS = 256
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

JobState = Literal["queued", "completed", "failed"]
DocumentState = Literal["pending", "done", "failed"]
StageState = Literal["pending", "done", "failed"]
CommandKind = Literal["upsert", "delete"]


# -- field checks ------------------------------------------------------------------------


def _first_surrogate(value: str) -> int | None:
    for position, char in enumerate(value):
        if "\ud800" <= char <= "\udfff":
            return position
    return None


def check_document_id(value: str) -> str:
    """1-512 characters, no control characters, no ``|``, valid Unicode."""
    for position, char in enumerate(value):
        if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F:
            raise PydanticCustomError(
                "document_id_control_char",
                "document id must not contain control characters "
                "(found U+{code} at position {position})",
                {"code": f"{ord(char):04X}", "position": position},
            )
        if char == "|":
            raise PydanticCustomError(
                "document_id_pipe",
                "document id must not contain '|' (found at position {position})",
                {"position": position},
            )
    if (surrogate := _first_surrogate(value)) is not None:
        raise PydanticCustomError(
            "document_id_surrogate",
            "document id must be valid Unicode (lone surrogate at position {position})",
            {"position": surrogate},
        )
    return value


DocumentIdIn = Annotated[
    str,
    Field(
        min_length=1,
        max_length=DOCUMENT_ID_MAX_CHARS,
        description="1-512 characters; no control characters and no '|'.",
        examples=["handbook/intro.md"],
    ),
    AfterValidator(check_document_id),
]


def _check_text(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError(
            "blank_text", "text must contain at least one non-whitespace character"
        )
    if (position := value.find("\x00")) >= 0:
        raise PydanticCustomError(
            "text_nul_char",
            "text must not contain NUL (U+0000) characters (found at position {position})",
            {"position": position},
        )
    if (surrogate := _first_surrogate(value)) is not None:
        raise PydanticCustomError(
            "text_surrogate",
            "text must be valid Unicode (lone surrogate at position {position})",
            {"position": surrogate},
        )
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _check_metadata_value(key: str, value: Any) -> MetadataValue:
    if isinstance(value, bool | str):
        if isinstance(value, str) and _first_surrogate(value) is not None:
            raise PydanticCustomError(
                "metadata_value", "metadata['{key}'] must be valid Unicode", {"key": key}
            )
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise PydanticCustomError(
                "metadata_value",
                "metadata['{key}'] is out of range: integers must fit in 64 bits",
                {"key": key},
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError(
                "metadata_value",
                "metadata['{key}'] must be a finite number (got {value})",
                {"key": key, "value": str(value)},
            )
        return value
    raise PydanticCustomError(
        "metadata_value",
        "metadata['{key}'] must be a string, number or boolean (got {kind})",
        {"key": key, "kind": _describe(value)},
    )


def _check_metadata(value: Any) -> dict[str, MetadataValue]:
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "metadata_type",
            "metadata must be an object of string keys to scalar values (got {kind})",
            {"kind": _describe(value)},
        )
    checked: dict[str, MetadataValue] = {}
    for key, item in value.items():
        if not key or len(key) > METADATA_KEY_MAX_CHARS or _first_surrogate(key) is not None:
            raise PydanticCustomError(
                "metadata_key",
                "metadata keys must be 1-{limit} characters of valid Unicode (got '{key}')",
                {"limit": METADATA_KEY_MAX_CHARS, "key": key[:80]},
            )
        checked[key] = _check_metadata_value(key, item)
    return checked


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- requests ----------------------------------------------------------------------------


class DocumentIn(_Request):
    """One document to create or replace."""

    id: DocumentIdIn | None = Field(
        default=None, description="Document id; a UUID is generated when absent."
    )
    text: Annotated[str, AfterValidator(_check_text)] = Field(
        description="The full text; must not be blank.", examples=["Redis Streams are..."]
    )
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict,
        description="String keys to strings, numbers (64-bit integers, finite floats) or booleans.",
        examples=[{"source": "handbook", "page": 3}],
    )

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_before(cls, value: Any) -> dict[str, MetadataValue]:
        # Checked here rather than by the union type so an invalid value gets one precise
        # error instead of one error per member of str | int | float | bool.
        return _check_metadata(value)


class UpsertRequest(_Request):
    """Documents to create or replace, as one job.

    A single document object (``{"text": ...}``) or a bare array of documents is also
    accepted and treated as ``{"documents": [...]}``.
    """

    documents: list[DocumentIn] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _accept_single_document(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"documents": data}
        if isinstance(data, dict) and "documents" not in data:
            return {"documents": [data]}
        return data


# -- responses ---------------------------------------------------------------------------


class AcceptedDocument(BaseModel):
    id: str
    kind: CommandKind


class JobAccepted(BaseModel):
    """The job was accepted: its commands are on the ingest stream."""

    job_id: str
    status: JobState = Field(
        description="'queued' for a new job; a replayed Idempotency-Key reports the "
        "job's current state."
    )
    documents: list[AcceptedDocument]
    status_url: str = Field(examples=["/v1/jobs/0b9f6e0e-8d0c-4c39-9a55-3b7f0c1d2e3f"])


class StageStates(BaseModel):
    embed: StageState = "pending"
    index: StageState = "pending"
    persist: StageState = "pending"


class DocumentFailure(BaseModel):
    stage: str
    error: str


class JobDocument(BaseModel):
    id: str
    kind: CommandKind
    version: str = Field(description="the ingest stream entry id of the command")
    state: DocumentState
    stages: StageStates
    error: DocumentFailure | None = None


class JobOut(BaseModel):
    job_id: str
    state: JobState
    total: int = Field(description="number of documents in the job")
    done: int
    failed: int
    created_at: str
    finished_at: str | None = None
    documents: list[JobDocument]


class ErrorResponse(BaseModel):
    error: str = Field(description="what went wrong, precisely")
    request_id: str


class FieldError(BaseModel):
    field: str = Field(examples=["body.documents.0.text"])
    message: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: Literal["Validation failed"] = "Validation failed"
    errors: list[FieldError]
    request_id: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str] = Field(examples=[{"redis": "ok"}])
