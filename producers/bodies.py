"""Reads webhook bodies from a file: JSON lines, one JSON document, or an array.

Each body is kept as bytes, exactly as the file holds it where it can be, since
the signature is computed over the raw bytes. A line that is not JSON is still
a body: the receiver answers it with a clear 400, as it would a bad delivery.
"""

from __future__ import annotations

from pathlib import Path

import orjson


def read_bodies(path: Path) -> list[bytes]:
    content = path.read_bytes()
    stripped = content.strip()
    if not stripped:
        return []

    try:
        document = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        document = None
    else:
        if isinstance(document, list):
            return [orjson.dumps(item) for item in document]
        return [stripped]

    return [line.strip() for line in content.splitlines() if line.strip()]
