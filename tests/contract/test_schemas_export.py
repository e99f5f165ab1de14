"""The generated contracts under ``schemas/``: fresh, consistent with each other, and
covering every consumer of every stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from embedstream.cli import app
from embedstream.contracts import export
from embedstream.contracts.catalog import (
    CHANNELS,
    MESSAGES,
    OTHER_PRODUCERS,
    messages_on,
    producer_of,
)
from embedstream.contracts.json_schemas import schema_file
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import JOB_COMPLETED, JobCompleted
from tests.contract.support import PACTS, RELEASED, RELEASED_PACTS, SCHEMAS


def test_committed_schemas_match_the_models() -> None:
    staleness = export.check(SCHEMAS)
    assert not staleness.stale, staleness.describe(SCHEMAS)


def test_export_check_fails_on_stale_files_and_export_fixes_them(tmp_path: Path) -> None:
    runner = CliRunner()
    stale = runner.invoke(app, ["schemas", "export", "--check", "--out", str(tmp_path)])
    assert stale.exit_code == 1
    assert "run `embedstream schemas export`" in stale.output
    assert "missing: asyncapi.yaml" in stale.output

    assert runner.invoke(app, ["schemas", "export", "--out", str(tmp_path)]).exit_code == 0
    (tmp_path / "json" / "old.v0.json").write_text("{}")
    (tmp_path / "json" / schema_file(MESSAGES[0].type)).write_text("{}")
    changed = runner.invoke(app, ["schemas", "export", "--check", "--out", str(tmp_path)])
    assert changed.exit_code == 1
    assert f"changed: json/{schema_file(MESSAGES[0].type)}" in changed.output
    assert "not generated (remove it): json/old.v0.json" in changed.output

    assert runner.invoke(app, ["schemas", "export", "--out", str(tmp_path)]).exit_code == 0
    fresh = runner.invoke(app, ["schemas", "export", "--check", "--out", str(tmp_path)])
    assert fresh.exit_code == 0, fresh.output


def test_compat_command_against_the_released_set() -> None:
    result = CliRunner().invoke(app, ["schemas", "compat", "v1", "--out", str(SCHEMAS)])
    assert result.exit_code == 0, result.output


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_asyncapi_document_is_complete_and_its_references_resolve() -> None:
    document = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    assert document["asyncapi"] == "3.0.0"
    for ref in _refs(document):
        if ref.startswith("#/"):
            _resolve(document, ref)
        else:
            assert (SCHEMAS / ref).is_file(), ref
    channels = document["channels"]
    for ch in CHANNELS:
        assert channels[ch.key]["address"] == f"{{prefix}}:{ch.key}"
        assert "prefix" in channels[ch.key]["parameters"]
        assert set(channels[ch.key]["messages"]) == {m.type for m in messages_on(ch.key)}
    operations = document["operations"].values()
    groups = {op.get("x-consumer-group") for op in operations if op["action"] == "receive"}
    assert {"embedder", "indexer", "persister"} <= groups
    senders = {op["x-pact-provider"] for op in operations if op["action"] == "send"}
    assert senders == {ch.producer for ch in CHANNELS} | {p.name for p in OTHER_PRODUCERS}
    for op in operations:
        if op["action"] == "send":  # each sender lists exactly the types it writes
            sent = {ref["$ref"].rsplit("/", 1)[-1] for ref in op["messages"]}
            assert sent == {m.type for m in MESSAGES if producer_of(m) == op["x-pact-provider"]}


def _pacts(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _pact_types(folder: Path) -> dict[tuple[str, str], set[str]]:
    """(consumer, provider) -> message types of its pact under ``folder``."""
    found: dict[tuple[str, str], set[str]] = {}
    for pact in _pacts(folder):
        assert all(i["type"] == "Asynchronous/Messages" for i in pact["interactions"])
        assert pact["metadata"]["pactSpecification"]["version"] == "4.0"
        types = {i["contents"]["content"]["type"] for i in pact["interactions"]}
        found[(pact["consumer"]["name"], pact["provider"]["name"])] = types
    return found


def test_every_consumer_of_every_stream_has_a_pact_for_every_type() -> None:
    """embedstream's own workers have current pacts for every type their streams carry,
    from each producer; a downstream subscriber reads one type version of each event
    (the newest), the other being covered by the released pacts."""
    current, released = _pact_types(PACTS), _pact_types(RELEASED_PACTS)
    for ch in CHANNELS:
        for consumer in ch.consumers:
            if consumer.pact is None:
                continue
            for producer in {producer_of(m) for m in messages_on(ch.key)}:
                expected = {m.type for m in messages_on(ch.key) if producer_of(m) == producer}
                types = current[(consumer.pact, producer)]
                if consumer.group is None:  # downstream: the newest version of each event
                    newest = {max(t for t in expected if _name(t) == _name(x)) for x in expected}
                    assert types == newest, (consumer.pact, types)
                    assert expected <= types | released.get((consumer.pact, producer), set())
                else:
                    assert types == expected, (consumer.pact, producer, types)


def _name(type_name: str) -> str:
    return type_name.rsplit(".", 1)[0]


@pytest.mark.parametrize("folder", [PACTS, RELEASED_PACTS], ids=["current", "released-v1"])
def test_pact_examples_conform_to_the_json_schemas(folder: Path) -> None:
    schemas = folder.parent / "json"
    for pact in _pacts(folder):
        for interaction in pact["interactions"]:
            body = interaction["contents"]["content"]
            schema = json.loads((schemas / schema_file(body["type"])).read_text())
            errors = list(Draft202012Validator(schema).iter_errors(body))
            assert not errors, (interaction["description"], [e.message for e in errors])


def test_released_set_is_a_complete_contract_set() -> None:
    assert (RELEASED / "asyncapi.yaml").is_file()
    # every released type is still produced (new types come in later releases)
    assert {p.name for p in (RELEASED / "json").glob("*.json")} <= {
        schema_file(m.type) for m in MESSAGES
    }
    providers = {p["provider"]["name"] for p in _pacts(RELEASED_PACTS)}
    assert providers == {ch.producer for ch in CHANNELS}


def test_release_copies_the_current_contract_set(tmp_path: Path) -> None:
    export.write(tmp_path)
    (tmp_path / "pacts").mkdir()
    (tmp_path / "pacts" / "a-b.json").write_text("{}")
    target = export.release(tmp_path, "v9")
    assert {p.name for p in (target / "json").iterdir()} == {schema_file(m.type) for m in MESSAGES}
    assert (target / "asyncapi.yaml").read_text() == (tmp_path / "asyncapi.yaml").read_text()
    assert (target / "pacts" / "a-b.json").is_file()
    assert export.released_schemas(tmp_path, "v9").keys() == {m.type for m in MESSAGES}
    with pytest.raises(FileExistsError):
        export.release(tmp_path, "v9")


def test_schemas_describe_the_two_field_wire_format() -> None:
    """Issue 9, item 5: the schema text describes the wire format as it is: two stream
    fields, ``ce`` (the attributes as one JSON object) and ``data`` (the payload as JSON
    text), not one field per property with ``schemaversion`` as decimal text."""
    rendered = {
        rel: json.loads(text) for rel, text in export.render().items() if rel.endswith(".json")
    }
    assert rendered
    for rel, schema in rendered.items():
        note = schema["description"]
        assert "`ce`" in note and "`data`" in note, (rel, note)
        assert "every property is one field" not in note, rel
        assert "decimal text" not in note, rel
        assert "decimal text" not in schema["properties"]["schemaversion"]["description"], rel
    # what the description says, done literally on fields the code writes, gives a body the
    # schema accepts: ce parsed as one object, data parsed as the payload
    fields = Envelope.wrap(
        JOB_COMPLETED,
        JobCompleted(job_id="j", documents=1, completed_at=datetime.now(UTC)),
        source="embedstream",
        tenant="acme",
        subject="j",
    ).to_fields()
    assert set(fields) == {"ce", "data"}
    body = {**json.loads(fields["ce"]), "data": json.loads(fields["data"])}
    schema = rendered[f"json/{schema_file(JOB_COMPLETED)}"]
    assert not [e.message for e in Draft202012Validator(schema).iter_errors(body)]
