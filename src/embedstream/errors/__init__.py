"""The failure vocabulary shared by handlers and the stream runtime.

- ``RetryableError``: try again later (with backoff) until ``max_deliveries``.
- ``PermanentError``: retrying cannot help; dead-letter now.
- ``PoisonMessage``: the message itself cannot be decoded or is invalid; dead-letter now.

Any other exception a handler raises is treated as retryable.

What a client reads about a failure (the job record's ``error``, ``job.failed``) is
``public_error``: a stable code and a short sentence per kind of failure. The exception's
own text (which may quote a database's message, a constraint or a failing row) goes to
the worker's log and the dead-letter stream only.

Which failures of a store are which is decided in one module per store, by exception
class: ``embedstream.errors.redis``, ``embedstream.errors.postgres``,
``embedstream.errors.chroma``.
"""

from __future__ import annotations


class EmbedstreamError(Exception):
    """Base class of every error embedstream raises on purpose. ``code`` and
    ``public_message`` are what clients are told (see ``public_error``)."""

    code = "failed"
    public_message = "the stage could not process the document"


class RetryableError(EmbedstreamError):
    """A transient failure: the message is delivered again after a backoff."""

    code = "retries_exhausted"
    public_message = "the stage kept failing and gave up after its retries"


class PermanentError(EmbedstreamError):
    """A failure that retrying cannot fix: the message goes to the dead-letter stream."""

    code = "rejected"
    public_message = "the stage refused the document"


class PoisonMessage(PermanentError):
    """The message cannot be decoded or fails validation."""

    code = "invalid_message"
    public_message = "the message is malformed or failed validation"


def public_error(error: BaseException) -> str:
    """``"<code>: <short message>"`` for ``error``: stable, and free of its text. An
    exception that is not one of ours was retried until the delivery limit."""
    if isinstance(error, EmbedstreamError):
        return f"{error.code}: {error.public_message}"
    return f"{RetryableError.code}: {RetryableError.public_message}"


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
