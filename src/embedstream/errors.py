"""The failure vocabulary shared by handlers and the stream runtime.

- ``RetryableError``: try again later (with backoff) until ``max_deliveries``.
- ``PermanentError``: retrying cannot help; dead-letter now.
- ``PoisonMessage``: the message itself cannot be decoded or is invalid; dead-letter now.

Any other exception a handler raises is treated as retryable.
"""

from __future__ import annotations


class EmbedstreamError(Exception):
    """Base class of every error embedstream raises on purpose."""


class RetryableError(EmbedstreamError):
    """A transient failure: the message is delivered again after a backoff."""


class PermanentError(EmbedstreamError):
    """A failure that retrying cannot fix: the message goes to the dead-letter stream."""


class PoisonMessage(PermanentError):
    """The message cannot be decoded or fails validation."""


class GroupMissingError(EmbedstreamError):
    """The consumer group (or its stream) does not exist (Redis answered NOGROUP)."""

    def __init__(self, stream: str, group: str) -> None:
        super().__init__(
            f"consumer group {group!r} does not exist on stream {stream!r}: create it with "
            f"create_group=True (the default), or check EMBEDSTREAM_STREAM_PREFIX and the "
            f"Redis database the process points at"
        )
        self.stream = stream
        self.group = group
