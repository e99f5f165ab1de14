"""Tenants: who owns a document or a job.

Every command and event carries its tenant in the envelope's ``tenant`` attribute, and a
document is identified by (tenant, document id) in every store. Where one string must
name a document (Redis hash fields and lock keys, Chroma chunk ids) it is the document
key ``{tenant}/{document_id}``: tenants contain no ``/`` while document ids may, so the
key splits unambiguously at its first ``/``.

The tenant syntax is defined once, here, and every place that checks a tenant uses it:
credentials (API keys, JWTs), the envelope (msgspec struct and its pydantic schema), the
CLI and PostgreSQL's CHECK constraints (migration ``0004`` repeats ``TENANT_REGEX``; a
test compares them). A tenant is matched as a whole string: Python's ``$`` also matches
before a trailing newline, so Python code uses ``fullmatch`` (or ``\\A...\\Z``), never
``match`` with ``$``.
"""

from __future__ import annotations

import re

#: 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit.
TENANT_SYNTAX = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
#: For engines where ``$`` means the end of the input: JSON Schema (ECMA-262),
#: pydantic's Rust regex and PostgreSQL's ``~``.
TENANT_REGEX = rf"^{TENANT_SYNTAX}$"
#: For Python's ``re`` used with ``search`` (msgspec's ``Meta(pattern=...)``).
TENANT_REGEX_PY = rf"\A{TENANT_SYNTAX}\Z"
TENANT_PATTERN = re.compile(TENANT_SYNTAX)
TENANT_RULE = "1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"


class InvalidTenant(ValueError):
    """A string that is not a tenant. The message states the rule, never the value."""


def is_tenant(value: object) -> bool:
    return isinstance(value, str) and TENANT_PATTERN.fullmatch(value) is not None


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is one; ``InvalidTenant`` (naming the rule only) else."""
    if not is_tenant(tenant):
        raise InvalidTenant(f"invalid tenant: {TENANT_RULE}")
    return tenant


def document_key(tenant: str, document_id: str) -> str:
    """``{tenant}/{document_id}``: one string naming a tenant's document."""
    check_tenant(tenant)
    return f"{tenant}/{document_id}"


def split_document_key(key: str) -> tuple[str, str]:
    """(tenant, document_id) of a document key."""
    tenant, sep, document_id = key.partition("/")
    if not sep or not is_tenant(tenant):
        raise ValueError(f"not a document key: {key[:80]!r}")
    return tenant, document_id


def chunk_id(tenant: str, document_id: str, index: int) -> str:
    """The deterministic id of a tenant's document's ``index``-th chunk."""
    return f"{document_key(tenant, document_id)}:{index}"
