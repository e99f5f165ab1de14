"""The helpers every stage shares: one outcome per message with one policy for a
missing one (``streams/outcomes.py``), payloads decoded by the stage's declared types
(``streams/decoding.py``), and the stage declarations themselves."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import fakeredis
import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from embedstream.cli import app
from embedstream.config import ConsumerSettings
from embedstream.errors import PermanentError, PoisonMessage
from embedstream.schemas.commands import DOCUMENT_UPSERT, DocumentUpsert
from embedstream.schemas.envelope import Envelope
from embedstream.streams.decoding import Decoded, payload_decoder
from embedstream.streams.messages import Ack, DeadLetter, Message, Retry
from embedstream.streams.names import PIPELINE, StreamNames
from embedstream.streams.outcomes import MissingOutcome, Outcomes
from embedstream.workers.stages import all_stages
from tests.support.builders import command_envelope, embedded_event, event_envelope


def fields_of(envelope: Envelope) -> dict[bytes, bytes]:
    return {
        k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in envelope.to_fields().items()
    }


def messages(count: int) -> list[Message[None]]:
    return [Message(f"1-{n}", "s", {}, None, 1) for n in range(count)]


# -- one outcome per message ------------------------------------------------------------


def test_outcomes_answer_in_message_order_whatever_the_order_they_are_set_in() -> None:
    outcomes = Outcomes(messages(3), stage="index")
    later = Retry(RuntimeError("later"))
    outcomes[2] = later
    outcomes.fail(1, PermanentError("refused"))
    outcomes[0] = Ack()
    result = outcomes.result()
    assert result[0] == Ack() and result[2] is later
    assert isinstance(result[1], DeadLetter) and str(result[1].error) == "refused"
    assert outcomes.decided() == result


def test_a_message_left_without_an_outcome_is_retried_and_logged_as_a_bug() -> None:
    outcomes = Outcomes(messages(3), stage="persist")
    outcomes[0] = Ack()
    with capture_logs() as logs:
        result = outcomes.result()
    assert result[0] == Ack()
    for missing in result[1:]:
        assert isinstance(missing, Retry) and isinstance(missing.error, MissingOutcome)
        assert "the persist stage gave no outcome" in str(missing.error)
    [entry] = [e for e in logs if e["log_level"] == "error"]
    assert entry["messages"] == ["1-1", "1-2"] and entry["stage"] == "persist"
    assert "a bug" in entry["event"]


async def test_the_runtime_applies_the_same_policy_to_a_handler_that_answers_too_few() -> None:
    from embedstream.streams.runner import StreamWorker
    from tests.support.streams import produce

    client = fakeredis.FakeAsyncRedis()
    names = StreamNames("unit-policy")
    ids = await produce(client, names.ingest, 3)

    async def short(batch: Any) -> list[Ack]:
        return [Ack()]  # one outcome for three messages

    worker: StreamWorker[Envelope] = StreamWorker(
        client,
        names,
        names.ingest,
        "g",
        short,
        ConsumerSettings(consumer_name="c", max_deliveries=3, visibility_timeout_ms=1000),
    )
    postponed: list[list[str]] = []

    async def set_idle(entry_ids: list[str], idle_ms: int) -> int:
        postponed.append(list(entry_ids))
        return len(entry_ids)

    worker.consumer.set_idle = set_idle  # type: ignore[method-assign]
    await worker.consumer.ensure_group()
    entries = await worker.consumer.read_new(10, None)
    with capture_logs() as logs:
        await worker._process(entries)
    assert postponed == [ids]  # none acked: which one was answered is unknown
    assert worker.stats.retried == 3 and worker.stats.acked == 0
    assert any("without an outcome" in e["event"] for e in logs if e["log_level"] == "error")


# -- decoding by declared type ------------------------------------------------------------


def test_the_decoder_hands_over_the_payload_of_a_declared_type() -> None:
    decode = payload_decoder({DOCUMENT_UPSERT: DocumentUpsert}, reader="the embed stage")
    envelope = command_envelope("j", "d", text="hello")
    decoded = decode(fields_of(envelope))
    assert isinstance(decoded, Decoded)
    assert decoded.envelope.id == envelope.id
    assert decoded.payload == DocumentUpsert(job_id="j", document_id="d", text="hello")


def test_other_types_invalid_payloads_and_broken_envelopes_are_poison_with_the_reason() -> None:
    decode = payload_decoder({DOCUMENT_UPSERT: DocumentUpsert}, reader="the embed stage")
    other = event_envelope(embedded_event("j", "d", 1))
    with pytest.raises(
        PoisonMessage, match=re.escape("unknown type 'document.embedded.v1': the embed stage reads")
    ):
        decode(fields_of(other))
    bad = fields_of(command_envelope("j", "d"))
    bad[b"data"] = b'{"job_id": "j", "document_id": "d", "text": 42}'
    with pytest.raises(PoisonMessage, match=re.escape("invalid document.upsert.v1 payload: text")):
        decode(bad)
    with pytest.raises(PoisonMessage, match="undecodable envelope"):
        decode({b"ce": b"not json", b"data": b"{}"})


# -- the stage declarations ------------------------------------------------------------------


def test_every_stage_is_declared_once_with_the_names_defined_once() -> None:
    STAGES = {stage.name: stage for stage in all_stages()}
    assert [stage.names for stage in STAGES.values()] == list(PIPELINE)
    assert {name: stage.group for name, stage in STAGES.items()} == {
        "embed": "embedder",
        "index": "indexer",
        "persist": "persister",
    }
    names = StreamNames("p")
    assert names.stage_groups() == (
        ("p:ingest", "embedder"),
        ("p:embedded", "indexer"),
        ("p:embedded", "persister"),
    )
    assert set(STAGES["embed"].payloads) == {
        "document.upsert.v1",
        "document.delete.v1",
        "document.reembed.v1",
    }
    for name in ("index", "persist"):
        assert set(STAGES[name].payloads) == {
            "document.embedded.v1",
            "document.embedded.v2",
            "document.removed.v1",
            "document.removed.v2",
        }


def test_the_cli_offers_exactly_the_declared_stages() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"])
    assert result.exit_code == 0
    assert "<embed|index|persist>" in result.output
    refused = CliRunner().invoke(app, ["worker", "frobnicate"])
    assert refused.exit_code == 2
    words = " ".join(refused.output.replace("│", " ").split())
    assert "'frobnicate' is not one of 'embed', 'index', 'persist'" in words


@pytest.mark.parametrize(
    ("stage", "absent"),
    [("embed", ("chromadb", "asyncpg")), ("index", ("asyncpg", "onnxruntime", "torch"))],
)
def test_a_worker_process_imports_its_own_stage_only(stage: str, absent: tuple[str, ...]) -> None:
    """The embed worker does not load Chroma's client (tens of MB of RSS), nor the index
    worker the model."""
    code = (
        "import sys\n"
        "from embedstream.workers.stages import stage_named\n"
        f"assert stage_named({stage!r}).name == {stage!r}\n"
        f"print(sorted(m for m in {absent!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
