"""Document versions and the text form every JSON reader keeps exact.

A document's version is its command's ingest stream entry id as one integer,
``ms * 2**20 + seq`` (``embedstream.streams.names.stream_id_to_version``): about 1.9e18
today, beyond 2**53, so a JSON number loses it in any reader that parses numbers as
doubles (JavaScript's ``JSON.parse`` rounds it; a subscriber could not compare versions).

The ``*.v2`` events therefore carry versions as **version text**: the integer in
decimal, zero-padded to exactly 20 digits (``"01816133304320000007"``). Every JSON
reader keeps a string exact; two version texts compare as strings in the same order as
the integers they stand for (same width, digits only), so ``a < b`` on the text is
the version order in any language; and ``BigInt(text)`` (JavaScript) or ``int(text)``
(Python) gives the integer back. 20 digits hold every unsigned 64-bit integer; stores
keep versions in a signed 64-bit column, so versions stay below 2**63.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

VERSION_DIGITS = 20
VERSION_PATTERN = r"^[0-9]{20}$"
MAX_VERSION = 2**63 - 1
"""Versions are stored as PostgreSQL ``bigint``."""

VersionText = Annotated[
    str,
    Field(
        pattern=VERSION_PATTERN,
        description="the document version as exact decimal text, zero-padded to 20 digits: "
        "compare two as strings (same order as the numbers) or parse with BigInt/int",
        examples=["01816133304320000007"],
    ),
]


def version_text(version: int) -> str:
    """``version`` as version text (20 digits, zero-padded)."""
    if not 0 <= version < 10**VERSION_DIGITS:
        raise ValueError(f"version {version} does not fit {VERSION_DIGITS} decimal digits")
    return f"{version:0{VERSION_DIGITS}d}"


def parse_version(text: str) -> int:
    """The integer of a version text; ``ValueError`` when it is not one."""
    if len(text) != VERSION_DIGITS or not text.isascii() or not text.isdigit():
        raise ValueError(f"not a version text ({VERSION_DIGITS} decimal digits): {text[:40]!r}")
    return int(text)
