"""The benchmarks' output: a Markdown table, printed and appended to the docs."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path


def publish(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    output: Path | None,
    numeric: Sequence[bool] = (),
) -> None:
    """Print a dated table under ``title``; append it to ``output`` if given.

    ``numeric`` marks the columns to align right, in order.
    """
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    align = [
        "---:" if i < len(numeric) and numeric[i] else "---" for i in range(len(header))
    ]
    lines = [
        f"\n### {time.strftime('%Y-%m-%d %H:%M')} — {title}, {machine}\n",
        f"| {' | '.join(header)} |",
        f"|{'|'.join(align)}|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    text = "\n".join(lines)
    print(text)
    if output is not None:
        with output.open("a") as out:
            out.write(text + "\n")
