"""Random identifiers, made cheaply: the ingress makes one per job and one per command."""

from __future__ import annotations

import os


def random_uuid() -> str:
    """A random (version 4, RFC 4122 variant) UUID in its canonical text form, what
    ``str(uuid.uuid4())`` gives, without building a ``uuid.UUID`` on the way."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
