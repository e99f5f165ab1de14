"""Tenants: who owns a document or a job.

Every command and event carries its tenant in the envelope's ``tenant`` attribute, and a
document is identified by (tenant, document id) in every store. Where one string must
name a document (Redis hash fields and lock keys, Chroma chunk ids) it is the document
key ``{tenant}/{document_id}``: tenants contain no ``/`` while document ids may, so the
key splits unambiguously at its first ``/``.
"""

from __future__ import annotations

import re

TENANT_REGEX = r"^[A-Za-z0-9._-]{1,64}$"
TENANT_PATTERN = re.compile(TENANT_REGEX)


def document_key(tenant: str, document_id: str) -> str:
    """``{tenant}/{document_id}``: one string naming a tenant's document."""
    if not TENANT_PATTERN.match(tenant):
        raise ValueError(f"invalid tenant {tenant[:80]!r}")
    return f"{tenant}/{document_id}"


def split_document_key(key: str) -> tuple[str, str]:
    """(tenant, document_id) of a document key."""
    tenant, sep, document_id = key.partition("/")
    if not sep or not TENANT_PATTERN.match(tenant):
        raise ValueError(f"not a document key: {key[:80]!r}")
    return tenant, document_id


def chunk_id(tenant: str, document_id: str, index: int) -> str:
    """The deterministic id of a tenant's document's ``index``-th chunk."""
    return f"{document_key(tenant, document_id)}:{index}"
