"""How deeply a JSON text nests arrays and objects, measured before anything parses it.

`json.loads` recurses once per level, and so does everything that walks the value afterwards (validation,
canonical JSON for idempotency keys, the database's JSON types, the response): about 1,000 levels exhaust
Python's stack and answer 500 `RecursionError`. One linear scan of the text, skipping strings, bounds that first.
"""
from __future__ import annotations

import json
import re

MAX_DEPTH = 64  # a job body nests 4 levels (messages, params); metadata may use the rest

# a whole string (a key when a colon follows it), else a quote that opens no whole string, else a bracket
_TOKEN = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")(\s*:)?|"|[\[\]{}]', re.DOTALL)


class TooDeep(ValueError):
    """The text nests deeper than the limit; `key` is the top-level member it happens in (None if not in one)."""

    def __init__(self, limit: int, key: str | None):
        super().__init__(f"nests arrays and objects more than {limit} levels deep")
        self.limit = limit
        self.key = key


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Raise TooDeep if `text` nests more than `limit` levels; says nothing about whether it is valid JSON."""
    if text.count("[") + text.count("{") <= limit:
        return  # too few brackets to nest that deep (most bodies): no scan
    depth, key = 0, None
    for token in _TOKEN.finditer(text):
        first = text[token.start()]
        if first == '"':
            if token.end() - token.start() == 1:
                return  # an unterminated string: not JSON, which the parser will say
            if depth == 1 and token.group(2) is not None:
                key = _key(token.group(1))
        elif first in "[{":
            depth += 1
            if depth > limit:
                raise TooDeep(limit, key)
        else:
            depth -= 1
            if depth == 0:
                key = None


def _key(quoted: str) -> str:
    try:
        return str(json.loads(quoted))  # a flat string: no recursion
    except ValueError:
        return quoted[1:-1]
