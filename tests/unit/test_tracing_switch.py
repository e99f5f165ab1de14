"""Tracing is on only when the standard OTEL_* variables ask for it, and free otherwise:
neither the tracing SDK nor an exporter or instrumentation is imported, and every helper
is a no-op."""

from __future__ import annotations

import subprocess
import sys

import pytest

from embedstream import tracing


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SERVICE_NAME": "api"}, False),
    ],
)
def test_the_standard_variables_turn_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert tracing.tracing_requested(environ) is on


def test_unconfigured_tracing_imports_nothing_and_changes_nothing() -> None:
    script = (
        "import sys\n"
        "from embedstream import tracing\n"
        "from embedstream.streams import batch, runner\n"
        "import embedstream.subscribe, embedstream.api.deps\n"
        "assert tracing.setup_tracing('x', instrument_clients=True) is False\n"
        "with tracing.batch_span('s', 'g', 'embed', ['00-' + '1' * 32 + '-' + '2' * 16 + '-01']):\n"
        "    with tracing.span('encode'):\n"
        "        assert tracing.current_traceparent() is None\n"
        # the tracing SDK, exporters, instrumentation (redis-py 8 itself imports the API
        # and the metrics SDK where they are installed)
        "ours = ('opentelemetry.sdk.trace', 'opentelemetry.exporter', "
        "'opentelemetry.instrumentation')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
    )
    env = {"PATH": "", "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_trace_ids_and_span_contexts_come_from_valid_traceparents_only() -> None:
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert tracing.trace_id_of(valid) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id_of("garbage") is None
    assert tracing.trace_id_of(None) is None
    pytest.importorskip("opentelemetry.trace")
    context = tracing._span_context(valid)
    assert context is not None
    assert format(context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert context.is_remote and context.trace_flags == 1
    for bad in (
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # invalid trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # invalid span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",  # not hex
        "",
        None,
    ):
        assert tracing._span_context(bad) is None, bad
