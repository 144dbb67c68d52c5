"""Starts the receiver and the worker as child processes, and stops them.

``engagement run`` and ``engagement demo`` run the same processes a deployment
runs, so the demo exercises the real path: HTTP, Kafka, Faust, DuckDB.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from engagement.errors import EngagementError

logger = logging.getLogger(__name__)


class ServiceFailed(EngagementError):
    """A child process exited, or did not become healthy in time."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    health_url: str
    log_file: Path | None

    def tail(self, lines: int = 20) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        return "\n".join(
            self.log_file.read_text(errors="replace").splitlines()[-lines:]
        )

    def check_alive(self) -> None:
        """Raise ServiceFailed, with the end of its log, if the process exited."""
        if self.process.poll() is not None:
            raise ServiceFailed(
                f"The {self.name} exited with code {self.process.returncode}."
                f"\n{self.tail()}"
            )

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(self.health_url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ServiceFailed(
            f"The {self.name} was not healthy after {timeout:.0f} s.\n{self.tail()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "The %s did not stop in %.0f s, killing it", self.name, timeout
            )
            self.process.kill()
            self.process.wait()


def start_service(
    name: str,
    command: str,
    env: Mapping[str, str],
    health_url: str,
    log_file: Path | None = None,
) -> Service:
    """Run ``python -m engagement <command>`` with ``env`` added to ours."""
    output: IO[bytes] | None = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        output = open(log_file, "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(
        [sys.executable, "-m", "engagement", command],
        env={**os.environ, **env},
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        stdin=subprocess.DEVNULL,
    )
    if output is not None:
        output.close()
    logger.info("Started the %s (pid %d)", name, process.pid)
    return Service(name, process, health_url, log_file)


def request_snapshot(worker_url: str, timeout: float = 120.0) -> dict:
    """Ask a worker for a snapshot and return its answer once it is written.

    The worker answers 503 until its state is ready (a rebalance settling, a
    recovery running); that passes, so the request is repeated until timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(f"{worker_url}/snapshot", timeout=timeout)
        if response.status_code == 200 or time.monotonic() > deadline:
            response.raise_for_status()
            return response.json()
        time.sleep(0.5)
