"""One tenant syntax (issue 10, item 4): defined once in ``schemas.tenancy``, matched as
a whole string, and the same wherever a tenant is checked."""

from __future__ import annotations

import json
import re

import pytest

from embedstream.api.security.principal import Principal
from embedstream.api.security.tokens import issue_token
from embedstream.config import AuthSettings
from embedstream.errors import PoisonMessage
from embedstream.schemas.envelope import Envelope, EnvelopeSchema
from embedstream.schemas.events import DocumentRemoved
from embedstream.schemas.tenancy import (
    TENANT_REGEX,
    TENANT_REGEX_PY,
    InvalidTenant,
    check_tenant,
    document_key,
    is_tenant,
)
from embedstream.streams.messages import decode_envelope
from tests.support.tenants import INVALID, VALID


@pytest.mark.parametrize("tenant", VALID + INVALID)
def test_every_check_agrees(tenant: str) -> None:
    expected = tenant in VALID
    assert is_tenant(tenant) is expected
    assert (re.search(TENANT_REGEX_PY, tenant) is not None) is expected
    assert (re.fullmatch(TENANT_REGEX.strip("^$"), tenant) is not None) is expected
    settings = AuthSettings(jwt_secret="unit-test-secret-0123456789-abcdefghijkl")
    try:
        issue_token(settings, tenant=tenant, scopes=["jobs:read"], subject="s", ttl_s=60)
        issued = True
    except InvalidTenant:
        issued = False
    assert issued is expected
    try:
        Envelope.wrap("x.v1", _payload(), source="t", tenant=tenant)
        wrapped = True
    except ValueError:
        wrapped = False
    assert wrapped is expected
    try:
        attrs = {"id": "1", "source": "t", "type": "x", "time": "2026-01-01T00:00:00Z"}
        EnvelopeSchema.model_validate_json(json.dumps({**attrs, "tenant": tenant, "data": "{}"}))
        schema_ok = True
    except ValueError:
        schema_ok = False
    assert schema_ok is expected


def _payload() -> DocumentRemoved:
    return DocumentRemoved(job_id="j", document_id="d", version=1)


def test_a_refusal_states_the_rule_and_never_the_value() -> None:
    with pytest.raises(InvalidTenant) as refused:
        check_tenant("secret-looking\nvalue")
    assert "secret-looking" not in str(refused.value)
    assert "1-64 characters" in str(refused.value)
    with pytest.raises(ValueError, match="invalid tenant"):
        document_key("tA\n", "doc")


def test_a_stream_entry_with_a_trailing_newline_tenant_is_poison_for_every_stage() -> None:
    envelope = Envelope.wrap("document.removed.v1", _payload(), source="t", tenant="tA")
    fields = {
        k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in envelope.to_fields().items()
    }
    fields[b"ce"] = fields[b"ce"].replace(b'"tenant":"tA"', b'"tenant":"tA\\n"')
    with pytest.raises(PoisonMessage):
        decode_envelope(fields)


def test_principals_only_come_with_valid_tenants() -> None:
    # Principal itself is a plain record; the credential checks are what enforce the
    # syntax (tested at the API): here, the regex every layer shares is anchored
    assert TENANT_REGEX.startswith("^") and TENANT_REGEX.endswith("$")
    assert TENANT_REGEX_PY.startswith("\\A") and TENANT_REGEX_PY.endswith("\\Z")
    assert Principal("acme", frozenset({"admin"}), "key:x", "api_key", "n").tenant == "acme"
