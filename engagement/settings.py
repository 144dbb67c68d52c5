"""Every setting of the job, read from ``ENGAGEMENT_*`` environment variables.

Names are prefixed by the part they configure (``kafka_``, ``broker_``,
``receiver_``, ``worker_``, ``duckdb_``); durations are in seconds.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engagement.errors import ConfigurationError

DEFAULT_TOPIC = "alpaclass.webhooks"
MAX_BODY_BYTES = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ENGAGEMENT_", env_file=".env", extra="ignore"
    )

    # Kafka. Unset bootstrap servers mean "the project's own local broker".
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = DEFAULT_TOPIC
    kafka_topic_partitions: int = Field(default=8, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    # Signed bodies that could not be used, kept with their reason for a while;
    # unset means the webhooks topic's name + ".rejected".
    kafka_rejected_topic: str | None = None
    kafka_rejected_retention_hours: float = Field(default=7 * 24, gt=0)
    # Inactivity alerts; unset means the webhooks topic's name with its last
    # part ("webhooks") replaced by "inactivity-alerts".
    kafka_alerts_topic: str | None = None
    kafka_alerts_retention_hours: float = Field(default=30 * 24, gt=0)

    # The local broker that `engagement broker start` assembles and runs.
    broker_port: int = Field(default=9092, ge=1, le=65535)
    broker_controller_port: int = Field(default=9093, ge=1, le=65535)
    broker_home: Path = Path("var/kafka")
    broker_start_timeout_seconds: float = 90.0

    # The HTTP receiver of Eduzz webhooks. Shared secrets, and optionally a
    # TOML file binding secrets to team ids (see producers.signature).
    webhook_secrets: Annotated[list[SecretStr], NoDecode] = []
    webhook_secrets_file: Path | None = None
    receiver_host: str = "127.0.0.1"
    receiver_port: int = Field(default=8000, ge=1, le=65535)
    receiver_max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1)
    # A sentDate further in the future than this is refused (clock skew aside).
    receiver_future_tolerance_seconds: float = Field(default=300.0, ge=0)
    # How long a delivery waits for Kafka's acknowledgement before it is
    # spooled to disk instead; the spool's size limit, beyond which 503.
    receiver_kafka_wait_seconds: float = Field(default=2.0, gt=0)
    receiver_spool_path: Path = Path("var/receiver-spool.sqlite3")
    receiver_spool_max_bytes: int = Field(default=1024**3, ge=MAX_BODY_BYTES)
    # Deliveries handled at once, waiting beyond those (then 503), and the
    # longest a delivery may take before it is answered 503.
    receiver_concurrency: int = Field(default=64, ge=1)
    receiver_queue_size: int = Field(default=512, ge=0)
    receiver_request_timeout_seconds: float = Field(default=10.0, gt=0)

    # The Faust worker.
    worker_app_id: str = "alpaclass-engagement"
    worker_data_dir: Path = Path("var/worker")
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = Field(default=6066, ge=1, le=65535)
    # The dashboard shows names and e-mails: loopback unless told otherwise.
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8050, ge=1, le=65535)
    # Host names it answers besides its own address and loopback's
    # (comma-separated): any other is refused, against DNS rebinding.
    dashboard_allowed_hosts: Annotated[list[str], NoDecode] = []

    # Inactivity alerts: the thresholds and deliveries file (engagement.alerts_config
    # documents it; unset means the defaults and no delivery), how often the
    # worker checks for keys due, and the attempts at delivering one alert.
    alerts_config: Path | None = None
    alerts_check_interval_seconds: float = Field(default=1.0, gt=0)
    alerts_delivery_attempts: int = Field(default=5, ge=1)
    alerts_delivery_first_wait_seconds: float = Field(default=1.0, ge=0)
    alerts_delivery_timeout_seconds: float = Field(default=10.0, gt=0)

    # Snapshots of the worker's state for DuckDB.
    # Keys the hashes of `engagement export --pseudonymize`: the same key gives
    # the same pseudonym for a name or e-mail, across exports.
    pseudonym_key: SecretStr | None = None
    duckdb_path: Path = Path("var/engagement.duckdb")
    duckdb_snapshot_interval_seconds: float = Field(default=60.0, gt=0)
    # How long a snapshot file is kept once a newer one replaced it: a reader's
    # connection sees the snapshot current when it opened the database.
    duckdb_snapshot_grace_seconds: float = Field(default=900.0, ge=0)
    # How long student_course_activity_history keeps a snapshot's rows; 0
    # keeps none.
    duckdb_history_retention_days: float = Field(default=90.0, ge=0)

    @field_validator("webhook_secrets", "dashboard_allowed_hosts", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def require_webhook_secrets(self) -> None:
        """Refuse to go on without a secret: the receiver would accept nothing."""
        if not self.webhook_secrets and self.webhook_secrets_file is None:
            raise ConfigurationError(
                "No webhook secret is configured. Set ENGAGEMENT_WEBHOOK_SECRETS to "
                "the secret(s) your school generated in Eduzz, separated by commas, "
                "or ENGAGEMENT_WEBHOOK_SECRETS_FILE to a TOML file of them."
            )

    @cached_property
    def bootstrap_servers(self) -> str:
        """The broker everything talks to: the configured one, else the local one."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        return f"127.0.0.1:{self.broker_port}"

    @property
    def rejected_topic(self) -> str:
        return self.kafka_rejected_topic or f"{self.kafka_topic}.rejected"

    @property
    def alerts_topic(self) -> str:
        if self.kafka_alerts_topic:
            return self.kafka_alerts_topic
        base, dot, last = self.kafka_topic.rpartition(".")
        if dot and last == "webhooks":
            return f"{base}.inactivity-alerts"
        return f"{self.kafka_topic}.inactivity-alerts"

    @property
    def uses_local_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def snapshot_dir(self) -> Path:
        """Where the Parquet snapshots behind the DuckDB views are written."""
        return self.duckdb_path.with_suffix(".snapshots")

    @property
    def receiver_url(self) -> str:
        return f"http://{self.receiver_host}:{self.receiver_port}/webhooks/eduzz"

    @property
    def worker_url(self) -> str:
        return f"http://{self.worker_web_host}:{self.worker_web_port}"
