"""Liveness arithmetic of ``Heartbeat`` on a fake clock, and progress reports from the
batch's context (including a worker thread that runs in a copy of it)."""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

from embedstream.cli import dev_worker_env
from embedstream.streams.heartbeat import Heartbeat, report_progress
from tests.support.clock import FakeClock as Clock


def test_not_running_is_never_stalled() -> None:
    clock = Clock()
    beat = Heartbeat(clock)
    clock.now += 1_000
    assert beat.stall(5) is None  # starting (model loading, waiting for PostgreSQL)


def test_idle_loop_that_turns_is_live_and_one_that_stops_is_stalled() -> None:
    clock = Clock()
    beat = Heartbeat(clock)
    beat.start(slots=2)
    for _ in range(10):
        clock.now += 4
        beat.loop()
        assert beat.stall(5) is None
    clock.now += 6
    stall = beat.stall(5)
    assert stall is not None and stall.what == "the worker loop" and stall.seconds == 6


def test_busy_slots_are_live_while_a_batch_reports_progress() -> None:
    clock = Clock()
    beat = Heartbeat(clock)
    beat.start(slots=1)
    batch = beat.batch_started()
    for _ in range(5):
        clock.now += 4
        batch.beat()
        assert beat.stall(5) is None
    clock.now += 5.5
    stall = beat.stall(5)
    assert stall is not None and "every batch in flight (1)" in str(stall)
    beat.batch_ended(batch)  # handed back: the loop moves again
    assert beat.stall(5) is None
    assert beat.in_flight() == 0


def test_stopped_heartbeat_is_not_stalled() -> None:
    clock = Clock()
    beat = Heartbeat(clock)
    beat.start(slots=1)
    clock.now += 60
    assert beat.stall(5) is not None
    beat.stop()
    assert beat.stall(5) is None


async def test_report_progress_reaches_the_batch_from_its_task_and_its_threads() -> None:
    clock = Clock()
    beat = Heartbeat(clock)
    beat.start(slots=1)
    executor = ThreadPoolExecutor(max_workers=1)

    async def batch() -> float:
        progress = beat.batch_started()
        clock.now += 3
        report_progress()
        in_task = progress.at
        clock.now += 3
        run = contextvars.copy_context().run
        await asyncio.get_running_loop().run_in_executor(executor, run, report_progress)
        assert progress.at == clock.now
        beat.batch_ended(progress)
        return in_task

    assert await asyncio.create_task(batch()) == 103.0
    report_progress()  # outside a batch: nothing to report to, no error
    executor.shutdown()


def test_dev_workers_get_a_health_port_only_when_asked() -> None:
    env = {"EMBEDSTREAM_HEALTH_PORT": "8081", "OTHER": "1"}
    assert "EMBEDSTREAM_HEALTH_PORT" not in dev_worker_env(env, 0, None)
    assert dev_worker_env(env, 2, 9100)["EMBEDSTREAM_HEALTH_PORT"] == "9102"
    assert dev_worker_env(env, 2, 9100)["OTHER"] == "1"
