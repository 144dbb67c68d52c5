"""`engagement dashboard` run as users run it: its own process on a free port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import free_ports

STARTUP_SECONDS = 60


@contextlib.contextmanager
def running_dashboard(db_path: Path) -> Iterator[str]:
    """The base URL of a dashboard over ``db_path``; stopped on exit."""
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "engagement", "dashboard"]
    command += ["--port", str(port), "--duckdb", str(db_path)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            _wait_until_up(process, url, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(process: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"engagement dashboard exited: {log.read().decode()}")
        try:
            httpx.get(f"{url}/version", timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"engagement dashboard did not answer at {url}")
