"""Tenant strings every check must agree on (issue 10, item 4)."""

from __future__ import annotations

VALID = ["a", "acme", "A.b_c-1", "0", "t" * 64, "default"]
INVALID = [
    "tA\n",
    "tA\r\n",
    "\ntA",
    "",
    " ",
    ".acme",
    "-acme",
    "_acme",
    "t" * 65,
    "a/b",
    "a:b",
    "a b",
    "ac\x00me",
    "äcme",
    "acme\u2028",
]
