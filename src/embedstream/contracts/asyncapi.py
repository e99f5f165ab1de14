"""The AsyncAPI 3.0 document: channels are the streams (address ``{prefix}:<key>`` with a
``prefix`` parameter), messages are the versioned types (payloads referencing
``json/<type>.json``), operations are each producer's ``send`` and each consumer's
``receive``. Consumer groups are recorded as ``x-consumer-group``: AsyncAPI's Redis
bindings have no fields for consumer groups."""

from __future__ import annotations

from typing import Any

from embedstream.contracts.catalog import (
    CHANNELS,
    MESSAGES,
    OTHER_PRODUCERS,
    PREFIX_PLACEHOLDER,
    Channel,
    Consumer,
    messages_on,
    producer_of,
)
from embedstream.contracts.json_schemas import schema_file
from embedstream.schemas.envelope import SCHEMA_VERSION

ASYNCAPI_VERSION = "3.0.0"
JSON_SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
DEFAULT_PREFIX = "embedstream"
DOWNSTREAM_GROUPS = "one group per downstream service"


def _message_id(type_name: str) -> str:
    """AsyncAPI component keys allow ``[A-Za-z0-9.\\-_]``: type names fit as they are."""
    return type_name


def _camel(*parts: str) -> str:
    words = [w for p in parts for w in p.replace("-", " ").replace(".", " ").split()]
    return words[0].lower() + "".join(w.capitalize() for w in words[1:])


def _channel(ch: Channel) -> dict[str, Any]:
    others = sorted({producer_of(m) for m in messages_on(ch.key)} - {ch.producer})
    return {
        "address": ch.address,
        "title": f"{PREFIX_PLACEHOLDER}:{ch.key}",
        "description": ch.summary,
        "parameters": {"prefix": {"$ref": "#/components/parameters/prefix"}},
        "messages": {
            _message_id(m.type): {"$ref": f"#/components/messages/{_message_id(m.type)}"}
            for m in messages_on(ch.key)
        },
        "x-producer": ch.producer,
        **({"x-other-producers": others} if others else {}),
        "x-consumer-groups": [c.group or DOWNSTREAM_GROUPS for c in ch.consumers],
    }


def _message_refs(ch: Channel, producer: str | None = None) -> list[dict[str, str]]:
    """References to the channel's messages (only ``producer``'s, when given)."""
    return [
        {"$ref": f"#/channels/{ch.key}/messages/{_message_id(m.type)}"}
        for m in messages_on(ch.key)
        if producer is None or producer_of(m) == producer
    ]


def _send(ch: Channel, producer: str, summary: str) -> dict[str, Any]:
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{ch.key}"},
        "summary": f"{producer}: {summary}",
        "messages": _message_refs(ch, producer),
        "x-pact-provider": producer,
    }


def _receive(ch: Channel, consumer: Consumer) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{ch.key}"},
        "summary": f"{consumer.name}: {consumer.summary}",
        "messages": _message_refs(ch),
        "x-consumer-group": consumer.group or DOWNSTREAM_GROUPS,
        "x-delivery": "at-least-once (XREADGROUP; XACK after the effect; XAUTOCLAIM "
        "reclaims entries of crashed consumers; dead letters on {prefix}:dlq)",
    }
    if consumer.pact is not None:
        operation["x-pact-consumer"] = consumer.pact
    return operation


def _operations() -> dict[str, Any]:
    operations: dict[str, Any] = {}
    others = {p.name: p.summary for p in OTHER_PRODUCERS}
    for ch in CHANNELS:
        operations[_camel("send", ch.key)] = _send(ch, ch.producer, ch.producer_summary)
        for name in sorted({producer_of(m) for m in messages_on(ch.key)} - {ch.producer}):
            operations[_camel("send", ch.key, name)] = _send(ch, name, others[name])
        for consumer in ch.consumers:
            key = _camel("receive", ch.key, consumer.group or consumer.name)
            operations[key] = _receive(ch, consumer)
    return operations


def _messages() -> dict[str, Any]:
    return {
        _message_id(m.type): {
            "name": m.type,
            "title": m.model.__name__,
            "summary": m.summary,
            "contentType": "application/json",
            "payload": {
                "schemaFormat": JSON_SCHEMA_FORMAT,
                "schema": {"$ref": f"./json/{schema_file(m.type)}"},
            },
            "x-subject": m.subject,
        }
        for m in MESSAGES
    }


def asyncapi_document() -> dict[str, Any]:
    """The whole document as plain data (dump it as YAML or JSON)."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "embedstream",
            "version": str(SCHEMA_VERSION),
            "description": "Redis Streams of the embedstream pipeline. Each entry is a "
            "CloudEvents 1.0 envelope in two stream fields: `ce`, the attributes as one "
            "JSON object, and `data`, the payload as JSON text. Payload schemas describe "
            "the envelope as one JSON object (the attributes of `ce` as keys, data the "
            "payload object), see embedstream.contracts.codec. Dead letters go to "
            "{prefix}:dlq with the original fields plus dlq_* fields.",
        },
        "defaultContentType": "application/json",
        "channels": {ch.key: _channel(ch) for ch in CHANNELS},
        "operations": _operations(),
        "components": {
            "parameters": {
                "prefix": {
                    "description": "the deployment's key prefix (EMBEDSTREAM_STREAM_PREFIX)",
                    "default": DEFAULT_PREFIX,
                }
            },
            "messages": _messages(),
        },
    }
