"""One JSON Schema (draft 2020-12) per message type: the envelope with ``type`` fixed and
``data`` the payload model, in the body form ``embedstream.contracts.codec`` describes."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from embedstream.contracts.catalog import MESSAGES, MessageType
from embedstream.schemas.envelope import EnvelopeSchema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE = "https://embedstream.dev/schemas/json/"
REF_TEMPLATE = "#/$defs/{model}"

_BODY_NOTE = (
    "This schema describes the message as one JSON object. On the stream an entry has "
    "two fields: `ce`, every property but `data` as one JSON object (same names and "
    "JSON types), and `data`, the payload as JSON text; absent optional attributes are "
    "absent from `ce`."
)


def schema_file(type_name: str) -> str:
    """The file name of a type's schema under ``schemas/json/``."""
    return f"{type_name}.json"


def message_schema(spec: MessageType, model: type[BaseModel] | None = None) -> dict[str, Any]:
    """The schema of one message type; ``model`` replaces the catalog's payload model
    (to check a changed model against a released schema)."""
    payload_model = model or spec.model
    envelope = copy.deepcopy(EnvelopeSchema.model_json_schema(ref_template=REF_TEMPLATE))
    payload = payload_model.model_json_schema(ref_template=REF_TEMPLATE)
    defs: dict[str, Any] = dict(envelope.pop("$defs", {}))
    defs.update(payload.pop("$defs", {}))
    payload_name = spec.model.__name__
    defs[payload_name] = payload

    properties: dict[str, Any] = envelope["properties"]
    properties["type"] = {
        "const": spec.type,
        "description": "the message type (versioned)",
        "title": "Type",
        "type": "string",
    }
    properties["subject"] = {**properties["subject"], "description": spec.subject}
    properties["data"] = {
        "$ref": REF_TEMPLATE.format(model=payload_name),
        "description": "the payload (JSON text in the stream's `data` field)",
    }
    properties["schemaversion"] = {
        **properties["schemaversion"],
        "description": "envelope schema version (a JSON integer in `ce`)",
    }
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID_BASE + schema_file(spec.type),
        "title": spec.type,
        "description": f"{spec.summary} {_BODY_NOTE}",
        "type": "object",
        "properties": properties,
        "required": envelope["required"],
        "additionalProperties": envelope.get("additionalProperties", False),
        "$defs": dict(sorted(defs.items())),
    }


def all_message_schemas() -> dict[str, dict[str, Any]]:
    """Type name -> schema, for every type in the catalog."""
    return {spec.type: message_schema(spec) for spec in MESSAGES}
