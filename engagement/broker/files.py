"""The files of a local broker under its home, and the commands that use them.

config/            server.properties and log4j2.properties, rewritten each start
data/              the KRaft log directory, formatted on the first start
logs/broker.log    what the broker printed (the previous run in broker.log.1)
broker.pid         the pid of the running broker
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from engagement.errors import BrokerError
from engagement.settings import Settings

logger = logging.getLogger(__name__)

JVM_OPTIONS = ["-Xms256m", "-Xmx1g", "-Djava.awt.headless=true"]

# Kafka's own default for message.max.bytes; the broker never allows less.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1048588

FORMAT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class BrokerFiles:
    """Where the broker rooted at ``home`` keeps its config, data and logs."""

    home: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def server_properties(self) -> Path:
        return self.home / "config" / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.home / "config" / "log4j2.properties"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    def write_config(self, settings: Settings) -> None:
        """Render the packaged templates with the ports and sizes of ``settings``."""
        max_message_bytes = max(
            KAFKA_DEFAULT_MAX_MESSAGE_BYTES, 2 * settings.receiver_max_body_bytes
        )
        values = {
            "port": settings.broker_port,
            "controller_port": settings.broker_controller_port,
            "log_dirs": self.data_dir,
            "max_message_bytes": max_message_bytes,
            "log_file": self.log_file,
        }

        self.server_properties.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        for target in (self.server_properties, self.log4j_properties):
            template = resources.files(__package__).joinpath(target.name).read_text()
            target.write_text(Template(template).substitute(values))

    def configured_port(self) -> int | None:
        """The client port in the written server.properties, if there is one."""
        try:
            lines = self.server_properties.read_text().splitlines()
        except OSError:
            return None

        for line in lines:
            key, _, value = line.partition("=")
            if key.strip() == "advertised.listeners":
                port = value.rsplit(":", 1)[-1].strip()
                return int(port) if port.isdigit() else None
        return None

    def rotate_log(self) -> None:
        # Keep the previous run's log for a look after a crash, and start
        # this run's log empty so its tail is about this run only.
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_name("broker.log.1"))

    def java_command(self, java: str, jar_dir: Path, main_class: str) -> list[str]:
        return [
            java,
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.log4j_properties}",
            # The JVM would write its crash report into the caller's directory.
            f"-XX:ErrorFile={self.log_file.parent}/hs_err_pid%p.log",
            "-cp",
            f"{jar_dir}/*",
            main_class,
        ]

    def format_once(self, java: str, jar_dir: Path) -> None:
        """Format the log directory unless an earlier start already did."""
        # Formatting gives the log directory its cluster id; doing it again
        # would refuse (or, forced, orphan) the topics already stored there.
        if (self.data_dir / "meta.properties").exists():
            return

        command = [
            *self.java_command(java, jar_dir, "kafka.tools.StorageTool"),
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.server_properties),
        ]
        logger.info("Formatting the KRaft log directory %s", self.data_dir)
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"Formatting the log directory {self.data_dir} took longer than "
                f"{FORMAT_TIMEOUT_SECONDS:.0f} s. Check that the disk is writable "
                f"and not full, and see {self.log_file}."
            ) from exc

        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise BrokerError(
                f"Kafka could not format its log directory {self.data_dir} (exit code "
                f"{result.returncode}). Remove that directory to start afresh, or see "
                f"{self.log_file}. The tool said:\n{output}"
            )


def new_cluster_id() -> str:
    """A cluster id in Kafka's format: 16 random bytes, URL-safe base64."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's own generator avoids a leading '-' too: the storage tool
        # would read such an id as an option.
        if not cluster_id.startswith("-"):
            return cluster_id
