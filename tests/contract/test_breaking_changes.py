"""Versioning: the current models must stay compatible with the released contract set
(``schemas/released/v1``), and removing or renaming a field of a message is caught, by
the schema compatibility check and by provider verification against the released pacts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pact import Verifier
from pydantic import BaseModel, create_model

from embedstream.api.commands import SOURCE as INGRESS_SOURCE
from embedstream.contracts.catalog import INGRESS, MESSAGES, RESULTS, MessageType, message_type
from embedstream.contracts.compat import breaking_changes, check_released
from embedstream.contracts.export import released_schemas
from embedstream.contracts.json_schemas import all_message_schemas, message_schema
from embedstream.schemas import events
from embedstream.schemas.commands import DOCUMENT_UPSERT, DocumentUpsert
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import JOB_COMPLETED, JobCompleted
from tests.contract.interactions import COMPLETED, DELETE, DELETED, FAILED, UPSERT, Interaction
from tests.contract.providers import (
    DOC,
    METADATA,
    TEXT,
    TRACEPARENT,
    Provider,
    ingress_provider,
    results_provider,
)
from tests.contract.support import (
    RELEASED_PACTS,
    RELEASED_VERSION,
    SCHEMAS,
    pact_message,
    run_verifier,
)


def without_field(model: type[BaseModel], name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {
        n: (f.annotation, f) for n, f in model.model_fields.items() if n != name
    }
    return create_model(model.__name__, __config__=model.model_config, **fields)


def renamed_field(model: type[BaseModel], old: str, new: str) -> type[BaseModel]:
    fields: dict[str, Any] = {
        (new if n == old else n): (f.annotation, f) for n, f in model.model_fields.items()
    }
    return create_model(model.__name__, __config__=model.model_config, **fields)


def with_field(model: type[BaseModel], name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in model.model_fields.items()}
    fields[name] = (str | None, None)
    return create_model(model.__name__, __config__=model.model_config, **fields)


def released(spec: MessageType) -> dict[str, Any]:
    return released_schemas(SCHEMAS, RELEASED_VERSION)[spec.type]


RELEASED_MESSAGES = [m for m in MESSAGES if m.type in released_schemas(SCHEMAS, RELEASED_VERSION)]


def test_current_models_are_compatible_with_the_released_contracts() -> None:
    released_set = released_schemas(SCHEMAS, RELEASED_VERSION)
    assert set(released_set) <= {m.type for m in MESSAGES}
    assert check_released(released_set, all_message_schemas(), RELEASED_VERSION) == []


def test_a_version_as_text_is_a_new_type_version_not_a_change_of_v1() -> None:
    """Issue 9, item 3: carrying versions as text breaks v1 consumers (an integer became a
    string), so it is document.*.v2, produced next to v1; v1 stays as released."""
    for v1, v2 in (
        (events.DOCUMENT_EMBEDDED, events.DOCUMENT_EMBEDDED_V2),
        (events.DOCUMENT_REMOVED, events.DOCUMENT_REMOVED_V2),
        (events.DOCUMENT_DELETED, events.DOCUMENT_DELETED_V2),
    ):
        problems = breaking_changes(released(message_type(v1)), message_schema(message_type(v2)))
        assert any(p.startswith("$.data.version: type widened") for p in problems), problems
        assert any(p.startswith("$.type: allowed values widened") for p in problems), problems


@pytest.mark.parametrize("spec", RELEASED_MESSAGES, ids=lambda m: m.type)
def test_removing_a_field_breaks_the_contract(spec: MessageType) -> None:
    for name in spec.model.model_fields:
        changed = message_schema(spec, without_field(spec.model, name))
        problems = breaking_changes(released(spec), changed)
        assert f"$.data.{name}: property removed" in problems, (name, problems)


@pytest.mark.parametrize("spec", RELEASED_MESSAGES, ids=lambda m: m.type)
def test_renaming_a_field_breaks_the_contract(spec: MessageType) -> None:
    for name in spec.model.model_fields:
        changed = message_schema(spec, renamed_field(spec.model, name, f"{name}_renamed"))
        problems = breaking_changes(released(spec), changed)
        assert f"$.data.{name}: property removed" in problems, (name, problems)
        assert any(p.startswith(f"$.data.{name}_renamed: property added") for p in problems)


def test_adding_a_field_breaks_consumers_that_refuse_unknown_fields() -> None:
    spec = MESSAGES[0]
    problems = breaking_changes(released(spec), message_schema(spec, with_field(spec.model, "x")))
    assert problems == [
        "$.data.x: property added to an object whose released schema refuses unknown properties"
    ]


def test_a_released_type_that_disappears_is_a_breaking_change() -> None:
    current = dict(all_message_schemas())
    del current[JOB_COMPLETED]
    problems = check_released(
        released_schemas(SCHEMAS, RELEASED_VERSION), current, RELEASED_VERSION
    )
    assert problems == [f"{JOB_COMPLETED}: released in v1 but no longer produced"]


# -- the same changes, caught by provider verification against the released pacts -------


def _mismatches(verifier: Verifier) -> list[str]:
    """``path: mismatch`` of every body mismatch of a verification that must fail."""
    passed, results = run_verifier(verifier)
    assert not passed and results["result"] is False
    return [
        f"{m['path']}: {m['mismatch']}"
        for error in results["errors"]
        for m in error["mismatch"].get("mismatches", [])
        if m.get("type") == "BodyMismatch"
    ]


def _verifier(
    provider: Provider, changed: Interaction, produce: Any, others: tuple[Interaction, ...]
) -> Verifier:
    handlers = {
        changed.description: produce,
        **{i.description: provider.produce(i) for i in others},
    }
    return (
        Verifier(provider.name)
        .message_handler(handlers)
        .state_handler(provider.state, teardown=True)
        .set_coloured_output(enabled=False)
        .add_source(RELEASED_PACTS)
    )


def test_an_ingress_upsert_with_a_renamed_field_fails_the_released_pact() -> None:
    renamed = renamed_field(DocumentUpsert, "text", "body")

    def produce(name: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        payload = renamed(job_id=str(uuid.uuid4()), document_id=DOC, body=TEXT, metadata=METADATA)
        envelope = Envelope.wrap(
            DOCUMENT_UPSERT,
            payload,
            source=INGRESS_SOURCE,
            tenant="acme",
            subject=DOC,
            traceparent=TRACEPARENT,
        )
        return pact_message(envelope.to_fields(), UPSERT.address)

    verifier = _verifier(ingress_provider(INGRESS), UPSERT, produce, (DELETE,))
    mismatches = _mismatches(verifier)
    assert "$.data: Actual map is missing the following keys: text" in mismatches, mismatches


def test_a_job_completed_without_a_field_fails_the_released_pact() -> None:
    removed = without_field(JobCompleted, "documents")

    def produce(name: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        job_id = str(uuid.uuid4())
        payload = removed(job_id=job_id, completed_at=datetime.now(UTC))
        envelope = Envelope.wrap(
            JOB_COMPLETED, payload, source="embedstream", tenant="acme", subject=job_id
        )
        return pact_message(envelope.to_fields(), COMPLETED.address)

    verifier = _verifier(results_provider(RESULTS), COMPLETED, produce, (FAILED, DELETED))
    mismatches = _mismatches(verifier)
    assert "$.data: Actual map is missing the following keys: documents" in mismatches, mismatches
