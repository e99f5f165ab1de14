"""Request and response models of the HTTP ingress.

Requests and responses never share a model. Request models check the shape of each
document (types, blank text, id syntax, metadata values); limits that come from
settings (documents per request, characters per document) and duplicate ids are
checked by the route, so their errors can name the exact field.
"""

from __future__ import annotations

import re
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
from embedstream.schemas.storable import (
    describe,
    metadata_key_problem,
    metadata_value_problem,
    text_problem,
)

DOCUMENT_ID_MAX_CHARS = 512

#: A job id as the ingress makes them: a random (version 4) UUID, lowercase, with dashes.
JOB_ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

JobState = Literal["queued", "completed", "failed"]
DocumentState = Literal["pending", "done", "failed"]
StageState = Literal["pending", "done", "failed"]
CommandKind = Literal["upsert", "delete"]


# -- field checks ------------------------------------------------------------------------


def is_job_id(value: str) -> bool:
    """Whether ``value`` is a job id of the ingress's making (the whole string)."""
    return JOB_ID_PATTERN.fullmatch(value) is not None


def _refuse(kind: str, message: str) -> PydanticCustomError:
    # the message is context, not the template: braces in it are not format fields
    return PydanticCustomError(kind, "{message}", {"message": message})


#: What a document id must not contain: C0 and C1 control characters (NUL included), DEL, '|'.
_ID_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f|]")


def check_document_id(value: str) -> str:
    """1-512 characters, no control characters (NUL included), no ``|``, valid Unicode.
    The first forbidden character is named, with its position."""
    found = _ID_FORBIDDEN.search(value)
    if found is not None:
        char, position = found.group(), found.start()
        if char == "|":
            raise PydanticCustomError(
                "document_id_pipe",
                "document id must not contain '|' (found at position {position})",
                {"position": position},
            )
        raise PydanticCustomError(
            "document_id_control_char",
            "document id must not contain control characters "
            "(found U+{code} at position {position})",
            {"code": f"{ord(char):04X}", "position": position},
        )
    if (problem := text_problem(value)) is not None:
        raise _refuse("document_id_surrogate", f"document id {problem}")
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
    if (problem := text_problem(value)) is not None:
        kind = "text_nul_char" if "NUL" in problem else "text_surrogate"
        raise _refuse(kind, f"text {problem}")
    return value


def _check_metadata(value: Any) -> dict[str, MetadataValue]:
    """Everything both stores can hold (``embedstream.schemas.storable``), with one
    precise error for the first problem."""
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "metadata_type",
            "metadata must be an object of string keys to scalar values (got {kind})",
            {"kind": describe(value)},
        )
    for position, (key, item) in enumerate(value.items()):
        if (problem := metadata_key_problem(key)) is not None:
            raise _refuse("metadata_key", f"metadata key #{position + 1} {problem}")
        if (problem := metadata_value_problem(item)) is not None:
            raise _refuse("metadata_value", f"metadata[{key[:80]!r}] {problem}")
    return value


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
        description="String keys (1-256 characters, not starting with '#', '$' or "
        "'chroma:') to strings, numbers (64-bit integers, finite floats) or booleans; no "
        "NUL characters anywhere.",
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


class DocumentError(BaseModel):
    """Where a failed document stopped and why (a stable code and a short message)."""

    stage: str
    error: str


class JobDocument(BaseModel):
    id: str
    kind: CommandKind
    version: str = Field(description="the ingest stream entry id of the command")
    state: DocumentState
    stages: StageStates
    error: DocumentError | None = None


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
