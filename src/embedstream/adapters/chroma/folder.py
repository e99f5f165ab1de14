"""An embedded Chroma folder (``PersistentClient``) shared by processes of one host.

Chroma's embedded mode is made for one process, and two things go wrong when several
open the same folder:

- creating the client on a fresh folder runs Chroma's sqlite migrations, which race
  between processes (``table collections already exists``, ``database is locked``) and
  crash all but one of them;
- two processes *writing* one folder lose vectors: each keeps its own HNSW index in
  memory and persists it over the other's (``python -m bench.chroma_writers``: two
  concurrent writers of 1,000 vectors each left 9-50 of the 2,000 unfindable by a query,
  while ``count()`` said 2,000; the same writers one after the other, none).

So every process opens the folder under a short **open lock** (``.embedstream-open.lock``
in the folder), retrying what is still transient, and a process that writes holds the
**writer lock** (``.embedstream-writer.lock``) for as long as it writes. A second index
worker on the same folder waits as a standby and takes over when the writer exits; the
OS releases the lock of a process that dies, so a SIGKILL frees it too. Readers
(``embedstream search``) take only the open lock. Several *active* index replicas need
Chroma's server mode (``EMBEDSTREAM_CHROMA_URL``).

The locks are ``flock`` locks (the ``filelock`` package): they hold across processes and
containers sharing one local volume, not across hosts sharing a network filesystem.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

from embedstream.errors.chroma import is_transient_open_error
from embedstream.logging import get_logger

T = TypeVar("T")

OPEN_LOCK = ".embedstream-open.lock"
WRITER_LOCK = ".embedstream-writer.lock"
OPEN_LOCK_TIMEOUT_S = 120.0

log = get_logger("embedstream.chroma")


@contextmanager
def open_lock(folder: Path, timeout_s: float = OPEN_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialize creating a client (and its collection) on ``folder`` across processes."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / OPEN_LOCK, timeout=timeout_s, thread_local=False)
    try:
        with lock:
            yield
    except Timeout as exc:
        raise TimeoutError(
            f"waited {timeout_s:g}s for another process to finish opening the Chroma "
            f"folder {folder} ({folder / OPEN_LOCK} is held)"
        ) from exc


def open_with_retries(
    folder: Path, create: Callable[[], T], *, attempts: int = 6, base_delay_s: float = 0.2
) -> T:
    """``create()`` under the open lock, retried with backoff while it fails with an error
    of a folder being created elsewhere (a process that does not take the lock)."""
    for attempt in range(1, attempts + 1):
        try:
            with open_lock(folder):
                return create()
        except Exception as exc:
            if attempt == attempts or not is_transient_open_error(exc):
                raise
            delay = base_delay_s * 2 ** (attempt - 1)
            log.warning(
                "chroma folder busy while opening, retrying",
                folder=str(folder),
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class WriterLock:
    """The single-writer lock of an embedded Chroma folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / WRITER_LOCK
        self._lock: FileLock | None = None

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.is_locked

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it; never waits."""
        if self.held:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        # no soft-lock fallback: a soft lock outlives a killed holder, and a standby would
        # then wait forever
        lock = FileLock(self.path, thread_local=False, fallback_to_soft=False)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            return False
        self._lock = lock
        return True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
