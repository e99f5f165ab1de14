"""A realistic corpus without a download: technical English from the standard library's
own documentation (module, class and function docstrings), cut into documents of
200-1,000 words. Deterministic for a given Python version.

    python -m bench.corpus OUT_DIR --count 200
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import re
from pathlib import Path

MODULES = [
    "argparse",
    "asyncio",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "http.client",
    "inspect",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "pathlib",
    "pickle",
    "queue",
    "random",
    "re",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "zipfile",
]


def _paragraphs() -> list[str]:
    paragraphs: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        objects = [module, *(obj for _, obj in inspect.getmembers(module))]
        for obj in objects:
            doc = inspect.getdoc(obj) if not isinstance(obj, (int, str, float)) else None
            if not doc:
                continue
            for block in re.split(r"\n\s*\n", doc):
                text = " ".join(block.split())
                if len(text.split()) >= 12 and not text.startswith((">>>", "...")):
                    paragraphs.append(text)
    return list(dict.fromkeys(paragraphs))


def generate(
    count: int, *, seed: int = 7, min_words: int = 200, max_words: int = 1000
) -> list[str]:
    """``count`` documents, each 200-1,000 words of paragraphs drawn in order."""
    paragraphs = _paragraphs()
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        target = rng.randint(min_words, max_words)
        start = rng.randrange(len(paragraphs))
        words, parts, i = 0, [], start
        while words < target:
            paragraph = paragraphs[i % len(paragraphs)]
            parts.append(paragraph)
            words += len(paragraph.split())
            i += 1
        documents.append("\n\n".join(parts))
    return documents


def write(out: Path, count: int, seed: int = 7) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, text in enumerate(generate(count, seed=seed)):
        path = out / f"doc-{n:04d}.md"
        path.write_text(text + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    paths = write(args.out, args.count, args.seed)
    print(f"wrote {len(paths)} documents to {args.out}")


if __name__ == "__main__":
    main()
