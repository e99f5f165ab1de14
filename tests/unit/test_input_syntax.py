"""Syntax checks match whole strings, and refusals do not repeat what they refuse
(issue 10: the same classes of mistake as items 3, 4 and 6, elsewhere)."""

from __future__ import annotations

import pytest

from embedstream.adapters.chroma.collection import create_client
from embedstream.adapters.postgres.migrate import MIGRATION_FILE
from embedstream.api.commands import valid_traceparent
from embedstream.api.security.apikeys import key_id_of, new_key
from embedstream.api.security.principal import InvalidScope, check_scopes, parse_scope_claim
from embedstream.config import ChromaSettings

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def test_an_api_key_is_matched_whole() -> None:
    key_id, key = new_key()
    assert key_id_of(key) == key_id
    for near in (key + "\n", key + "x", "x" + key, key[:-1]):
        assert key_id_of(near) is None


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (f"00-{TRACE}-{PARENT}-01", True),
        (f"01-{TRACE}-{PARENT}-01-future-field", True),
        (f"01-{TRACE}-{PARENT}-01-\x01\x1b[2J", False),  # control characters ride along
        (f"01-{TRACE}-{PARENT}-01-caf\u00e9", False),
        (f"00-{TRACE}-{PARENT}-01x", False),
    ],
)
def test_traceparent_is_matched_whole(value: str, valid: bool) -> None:
    assert (valid_traceparent(value) == value) is valid


def test_migration_file_names_are_matched_whole() -> None:
    assert MIGRATION_FILE.fullmatch("0004_one_tenant_syntax.sql")
    assert not MIGRATION_FILE.fullmatch("0004_x.sql\n")
    assert not MIGRATION_FILE.fullmatch("\u0664\u0660\u0660\u0661_x.sql")  # Arabic digits


def test_a_bad_chroma_url_is_refused_without_repeating_it() -> None:
    settings = ChromaSettings(chroma_url="ftp://user:s3cret-pass@chroma.internal")
    with pytest.raises(ValueError, match="EMBEDSTREAM_CHROMA_URL") as refused:
        create_client(settings)
    assert "s3cret-pass" not in str(refused.value)


def test_unknown_scope_names_are_bounded_in_messages() -> None:
    claim = " ".join(f"scope{n}-" + "x" * 100 for n in range(50))
    with pytest.raises(InvalidScope) as refused:
        check_scopes(parse_scope_claim(claim))
    assert len(str(refused.value)) < 400
    assert "and 45 more" in str(refused.value)
