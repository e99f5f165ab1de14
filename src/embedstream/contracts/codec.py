"""The one mapping between a stream entry and the JSON body of a message contract.

On a stream an envelope is two fields (``Envelope.to_fields``): ``ce``, the CloudEvents
attributes as one JSON object, and ``data``, the payload's JSON text. In a pact, and in
the JSON Schemas under ``schemas/json/``, the same message is one JSON object:

- each attribute of ``ce`` is one top-level key with the same name and JSON type
  (``schemaversion`` is an integer, the others strings);
- ``data`` is the payload as a JSON object;
- an optional attribute that is absent (``subject``, ``traceparent``) is absent from the
  body (never ``null``).

The pact's message metadata carries ``stream``: the stream the entry is on, with the
deployment prefix written ``{prefix}`` (e.g. ``{prefix}:results``), and ``contentType``
``application/json``. Consumer tests turn a pact body into stream fields with
``body_to_fields``; provider verifications turn what the producer really wrote with
``fields_to_body``. Both directions are total: a producer that writes something else
yields a body that fails the pact, never an exception here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from embedstream.contracts.catalog import PREFIX_PLACEHOLDER
from embedstream.schemas.envelope import ATTRIBUTES_FIELD, DATA_FIELD, Envelope
from embedstream.streams.names import as_text

CONTENT_TYPE = "application/json"
STREAM_METADATA = "stream"


def fields_to_body(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """The contract body of a stream entry's fields. Fields other than ``ce`` and
    ``data`` are kept as text keys, so a producer writing something else fails the pact
    instead of raising here."""
    body: dict[str, Any] = {}
    for raw_key, raw_value in fields.items():
        key, value = as_text(raw_key), as_text(raw_value)
        if key == ATTRIBUTES_FIELD:
            attrs = _json_oras_text(value)
            if isinstance(attrs, dict):
                body.update(attrs)
            else:
                body[key] = attrs
        elif key == DATA_FIELD:
            body[key] = _json_oras_text(value)
        else:
            body[key] = value
    return body


def _json_oras_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def body_to_fields(body: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The stream fields of a contract body (what ``XADD`` would have written)."""
    attrs = {k: v for k, v in body.items() if k != DATA_FIELD and v is not None}
    fields = {ATTRIBUTES_FIELD.encode(): json.dumps(attrs, separators=(",", ":")).encode()}
    if DATA_FIELD in body:
        data = body[DATA_FIELD]
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        fields[DATA_FIELD.encode()] = text.encode()
    return fields


def envelope_body(envelope: Envelope) -> dict[str, Any]:
    """The contract body of an envelope (through its stream fields)."""
    return fields_to_body(envelope.to_fields())


def stream_address(stream: str, prefix: str) -> str:
    """``{prefix}:results`` for ``myprefix:results`` under prefix ``myprefix``."""
    head = f"{prefix}:"
    return PREFIX_PLACEHOLDER + stream[len(prefix) :] if stream.startswith(head) else stream


def message_metadata(address: str) -> dict[str, str]:
    """The pact metadata of a message on the stream ``address`` (``{prefix}:...``)."""
    return {STREAM_METADATA: address, "contentType": CONTENT_TYPE}
