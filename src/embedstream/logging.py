"""structlog set-up: JSON lines in production, a readable console in development.

Credentials never reach the output: ``redact_secrets`` runs last before rendering, the
console renders tracebacks without local variables (rich's default shows them, request
headers included, where no redaction sees them), and the rendered line is redacted once
more by pattern."""

from __future__ import annotations

import logging
import sys

import structlog

from embedstream.redaction import install_stdlib_redaction, redact_secrets, redact_text


def _redacted(renderer: structlog.types.Processor) -> structlog.types.Processor:
    """``renderer`` whose output is redacted by pattern (keys, JWTs, Bearer values)."""

    def render(
        logger: object, method_name: str, event_dict: structlog.types.EventDict
    ) -> structlog.typing.ProcessorReturnValue:
        line = renderer(logger, method_name, event_dict)
        return redact_text(line) if isinstance(line, str) else line

    return render


def console_renderer(colors: bool) -> structlog.dev.ConsoleRenderer:
    """The development renderer: rich tracebacks, but never their local variables."""
    formatter = structlog.dev.RichTracebackFormatter(
        show_locals=False, color_system="truecolor" if colors else None
    )
    return structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=formatter)


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Configure structlog and the standard library once per process."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = console_renderer(colors=sys.stderr.isatty())
    shared.append(redact_secrets)  # last before rendering: nothing escapes it
    structlog.configure(
        processors=[*shared, _redacted(renderer)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(name)s %(message)s")
    install_stdlib_redaction()
    for noisy in ("httpx", "chromadb", "sentence_transformers", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger named ``name``: what ``configure_logging`` set up, a filtering bound
    logger (``structlog.make_filtering_bound_logger``)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
