"""Exactly one outcome per message: the helper every stage's handler fills.

A handler decides message by message, often out of order (a batch's documents are
written together, some fail on their own). ``Outcomes`` keeps one slot per message;
``result()`` answers the runtime. A message left without an outcome is a bug in the
handler, and there is one policy for it, here and in the runtime (a handler that answers
too few outcomes): the message is retried with ``MissingOutcome`` and the bug is logged
as an error; it is never acked (nothing says its effect is durable) and never dropped.
After ``max_deliveries`` it is dead-lettered like any message that keeps failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from embedstream.errors import RetryableError
from embedstream.logging import get_logger
from embedstream.streams.messages import Message, Outcome, Retry, outcome_for

log = get_logger("embedstream.worker")


class MissingOutcome(RetryableError):
    """A handler gave a message no outcome (a bug): it is retried."""


def missing_outcome(stage: str, message_ids: Sequence[str], why: str) -> Retry:
    """The outcome of messages left without one, logged once as the bug it is."""
    log.error(
        "handler left messages without an outcome; they will be retried (a bug)",
        stage=stage,
        messages=list(message_ids[:20]),
        count=len(message_ids),
        why=why,
    )
    return Retry(MissingOutcome(f"the {stage} stage gave no outcome for the message ({why})"))


class Outcomes:
    """One outcome slot per message of a batch, in the batch's order."""

    def __init__(self, messages: Sequence[Message[Any]], *, stage: str) -> None:
        self.messages = messages
        self.stage = stage
        self._slots: list[Outcome | None] = [None] * len(messages)

    def __setitem__(self, position: int, outcome: Outcome) -> None:
        self._slots[position] = outcome

    def __getitem__(self, position: int) -> Outcome | None:
        return self._slots[position]

    def fail(self, position: int, error: BaseException) -> None:
        """The outcome ``error`` stands for: permanent errors dead-letter, others retry."""
        self._slots[position] = outcome_for(error)

    def decided(self) -> list[Outcome]:
        """The outcomes set so far."""
        return [outcome for outcome in self._slots if outcome is not None]

    def result(self) -> list[Outcome]:
        """One outcome per message; missing ones follow the policy (module doc)."""
        missing = [i for i, outcome in enumerate(self._slots) if outcome is None]
        if missing:
            ids = [self.messages[i].id for i in missing]
            retry = missing_outcome(self.stage, ids, "no outcome was set")
            for i in missing:
                self._slots[i] = retry
        return [outcome for outcome in self._slots if outcome is not None]
