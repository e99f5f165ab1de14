"""Container health check: GET the process's own probe, exit 0 on 200, 1 otherwise.

    python -m embedstream.probe worker   # /healthz on EMBEDSTREAM_HEALTH_PORT (liveness)
    python -m embedstream.probe api      # /readyz on EMBEDSTREAM_PORT (Redis answers)
    python -m embedstream.probe URL      # any URL

Standard library only, so a check costs one short Python start-up (no CLI, no clients).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TARGETS = {
    "worker": ("EMBEDSTREAM_HEALTH_PORT", "8081", "/healthz"),
    "api": ("EMBEDSTREAM_PORT", "8000", "/readyz"),
}


def url_for(target: str) -> str:
    if target not in TARGETS:
        return target
    variable, default, path = TARGETS[target]
    return f"http://127.0.0.1:{os.environ.get(variable) or default}{path}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: python -m embedstream.probe {{{'|'.join(TARGETS)}|URL}}", file=sys.stderr)
        return 2
    url = url_for(argv[0])
    try:
        with urllib.request.urlopen(url, timeout=4) as reply:
            return 0 if reply.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code} {error.read()[:500].decode(errors='replace')}", file=sys.stderr)
    except OSError as error:
        print(f"{url}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
