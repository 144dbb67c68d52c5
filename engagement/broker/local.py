"""A single-node Apache Kafka broker run as a local Java process.

Everything lives under ``settings.broker_home``: the jars in ``lib/<version>/``
(unless another ``lib_cache`` is given) and the files that ``BrokerFiles``
describes (config, data, logs, pid file).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engagement.broker import process
from engagement.broker.files import BrokerFiles
from engagement.broker.probe import kafka_answers, port_accepts, port_is_free
from engagement.broker.toolchain import KAFKA_VERSION, find_java, resolve_jars
from engagement.errors import BrokerError, ConfigurationError
from engagement.settings import Settings

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap_servers: str
    version: str
    home: Path
    log_file: Path


class LocalBroker:
    """Assembles, starts and stops the local broker described by ``settings``.

    ``lib_cache`` is where the per-version jar directories live; it defaults
    to ``broker_home/lib`` and lets several homes share one download.
    """

    def __init__(self, settings: Settings, lib_cache: Path | None = None) -> None:
        self.settings = settings
        self.home = settings.broker_home.resolve()
        self.lib_cache = (lib_cache or self.home / "lib").resolve()
        self.files = BrokerFiles(self.home)
        self.log_file = self.files.log_file
        self.pid_file = self.files.pid_file

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.settings.broker_port}"

    def start(self) -> float:
        """Start the broker unless it runs already; the seconds until it answered."""
        began = time.monotonic()

        with self._start_lock():
            pid = self._running_pid()
            if pid is not None:
                # Ours already; it may still be starting, so wait for it too.
                logger.debug("The local broker already runs as pid %s", pid)
                self._check_running_port(pid)
                self._wait_until_ready(pid, began, launched=False)
                return time.monotonic() - began

            java = find_java()
            self._check_ports()
            jar_dir = resolve_jars(self.lib_cache)

            self.files.write_config(self.settings)
            self.files.rotate_log()
            self.files.format_once(java, jar_dir)

            pid = self._launch(java, jar_dir)
            self._wait_until_ready(pid, began, launched=True)

        elapsed = time.monotonic() - began
        logger.info("Kafka %s answers at %s", KAFKA_VERSION, self.bootstrap_servers)
        return elapsed

    def stop(self, timeout: float = 30) -> bool:
        """Stop the broker, gracefully if it can; False when none was running."""
        pid = self._running_pid()
        if pid is None:
            return False

        # A graceful stop lets the broker close its logs, so the next start
        # does not have to recover them.
        logger.info("Stopping the local broker (pid %s)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

        if not process.wait_for_exit(pid, timeout):
            logger.warning("The broker ignored SIGTERM for %.0f s; killing it", timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not process.wait_for_exit(pid, 10):
                raise BrokerError(
                    f"The local Kafka broker (pid {pid}) survived SIGKILL. Check it "
                    f"with `ps -p {pid}` and end it by hand."
                )

        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> BrokerStatus:
        pid = self._running_pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap_servers=self.bootstrap_servers,
            version=KAFKA_VERSION,
            home=self.home,
            log_file=self.log_file,
        )

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        # Two concurrent starts must not both launch a broker on one home.
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / ".start.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _running_pid(self) -> int | None:
        """The pid of our broker if it runs; a stale pid file is removed."""
        pid = process.read_pid(self.pid_file)
        if pid is None:
            return None

        if process.is_alive(pid) and self._is_our_broker(pid):
            return pid

        logger.debug("Removing the stale pid file %s (pid %s)", self.pid_file, pid)
        self.pid_file.unlink(missing_ok=True)
        return None

    def _is_our_broker(self, pid: int) -> bool:
        # Pids are reused: the number alone could name any later process.
        args = process.command_line(pid)
        if args is None:
            return True
        return "kafka.Kafka" in args and str(self.files.server_properties) in args

    def _check_running_port(self, pid: int) -> None:
        # Waiting on the configured port for a broker that listens on another
        # would only end in a time-out.
        running_port = self.files.configured_port()
        if running_port is not None and running_port != self.settings.broker_port:
            raise BrokerError(
                f"The local Kafka broker already runs (pid {pid}) on port "
                f"{running_port}, but ENGAGEMENT_BROKER_PORT is "
                f"{self.settings.broker_port}. Run `engagement broker stop` and "
                "start it again to use the new port."
            )

    def _check_ports(self) -> None:
        ports = {
            "ENGAGEMENT_BROKER_PORT": self.settings.broker_port,
            "ENGAGEMENT_BROKER_CONTROLLER_PORT": self.settings.broker_controller_port,
        }
        if len(set(ports.values())) == 1:
            raise ConfigurationError(
                "ENGAGEMENT_BROKER_PORT and ENGAGEMENT_BROKER_CONTROLLER_PORT are "
                f"both {self.settings.broker_port}; the broker needs two different "
                "ports, so set one of them to another value."
            )

        for variable, port in ports.items():
            if not port_is_free(HOST, port):
                raise BrokerError(
                    f"Port {port} on {HOST} is already in use by another program, so "
                    "the local Kafka broker cannot listen on it. Stop that program "
                    f"(`ss -ltnp 'sport = :{port}'` shows which) or set {variable} "
                    "to a free port."
                )

    def _launch(self, java: str, jar_dir: Path) -> int:
        command = [
            *self.files.java_command(java, jar_dir, "kafka.Kafka"),
            str(self.files.server_properties),
        ]
        pid = process.spawn_detached(command, self.log_file)
        process.write_pid(self.pid_file, pid)
        logger.info("Started the local broker as pid %s", pid)
        return pid

    def _wait_until_ready(self, pid: int, began: float, launched: bool) -> None:
        timeout = self.settings.broker_start_timeout_seconds
        deadline = began + timeout

        while (remaining := deadline - time.monotonic()) > 0:
            if not process.is_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"The local Kafka broker (pid {pid}) exited while starting. Its "
                    f"log {self.log_file} ends with:\n{process.tail(self.log_file)}"
                )

            # The cheap TCP check first: aiokafka logs every refused connection.
            if port_accepts(
                HOST, self.settings.broker_port, min(1.0, remaining)
            ) and kafka_answers(self.bootstrap_servers, min(5.0, remaining)):
                return
            time.sleep(0.2)

        # A broker that never answered is of no use; a later start should
        # begin from scratch rather than find it half alive.
        if launched:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            process.wait_for_exit(pid, 10)
            self.pid_file.unlink(missing_ok=True)
        raise BrokerError(
            f"The local Kafka broker did not answer at {self.bootstrap_servers} "
            f"within {timeout:.0f} s. On a slow machine raise "
            "ENGAGEMENT_BROKER_START_TIMEOUT_SECONDS. Its log "
            f"{self.log_file} ends with:\n{process.tail(self.log_file)}"
        )
