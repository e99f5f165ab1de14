"""Run the embed worker (settings from the environment) in burst mode, then print what it
acknowledged and which heavy modules this process imported, as one JSON line.

    python -m tests.support.embed_worker_modules
"""

from __future__ import annotations

import asyncio
import json
import sys

from embedstream.config import Settings
from embedstream.workers.embed import EMBED_STAGE
from embedstream.workers.stage import run_stage

WATCHED = ("torch", "transformers", "sentence_transformers", "optimum", "onnxruntime")


def main() -> None:
    stats = asyncio.run(run_stage(EMBED_STAGE, Settings(), asyncio.Event(), burst=True))
    imported = sorted({m.split(".")[0] for m in sys.modules} & set(WATCHED))
    print(json.dumps({"acked": stats.acked, "imported": imported}))


if __name__ == "__main__":
    main()
