"""The one mapping between a stream entry and the JSON body of a message contract.

On a stream an envelope is a flat field map (``Envelope.to_fields``). In a pact, and in
the JSON Schemas under ``schemas/json/``, the same message is one JSON object:

- each stream field is one top-level key with the same name;
- text fields (``id``, ``source``, ``type``, ``specversion``, ``time``, ``subject``,
  ``datacontenttype``, ``traceparent``) are JSON strings, as they are;
- ``schemaversion`` (decimal text on the stream) is a JSON integer;
- ``data`` (JSON text on the stream) is the payload as a JSON object;
- an optional attribute that is absent on the stream (``subject``, ``traceparent``) is
  absent from the body (never ``null``).

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
from embedstream.schemas.envelope import Envelope

CONTENT_TYPE = "application/json"
STREAM_METADATA = "stream"
_INTEGER_FIELDS = frozenset({"schemaversion"})
_JSON_FIELDS = frozenset({"data"})


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def fields_to_body(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """The contract body of a stream entry's fields."""
    body: dict[str, Any] = {}
    for raw_key, raw_value in fields.items():
        key, value = _text(raw_key), _text(raw_value)
        if key in _JSON_FIELDS:
            try:
                body[key] = json.loads(value)
            except ValueError:
                body[key] = value
        elif key in _INTEGER_FIELDS and value.isdigit():
            body[key] = int(value)
        else:
            body[key] = value
    return body


def body_to_fields(body: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The stream fields of a contract body (what ``XADD`` would have written)."""
    fields: dict[bytes, bytes] = {}
    for key, value in body.items():
        if value is None:
            continue
        if key in _JSON_FIELDS:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        fields[key.encode()] = text.encode()
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
