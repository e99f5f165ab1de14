"""Container health check for workers: Redis answers. (A stuck replica shows up as
growing idle time in `embedstream status`; its entries are reclaimed by the others.)"""

from __future__ import annotations

import os
import sys

import redis


def main() -> int:
    client = redis.Redis.from_url(os.environ.get("EMBEDSTREAM_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"redis unreachable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
