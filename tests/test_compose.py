"""docker-compose.yml cannot run here (no Docker engine), so it is checked
against the code: the same settings, commands, ports and Kafka version."""

from pathlib import Path

import pytest
import typer.main
import yaml

from engagement.broker import KAFKA_VERSION
from engagement.cli import cli
from engagement.kafka import TOPIC_MAX_MESSAGE_BYTES
from engagement.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _settings_of(service: dict) -> dict[str, str]:
    return {
        name: str(value)
        for name, value in service["environment"].items()
        if name.startswith("ENGAGEMENT_")
    }


def test_kafka_is_the_official_image_of_the_tested_version(services):
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= TOPIC_MAX_MESSAGE_BYTES


def test_every_setting_named_exists_in_the_code(services):
    fields = {f"ENGAGEMENT_{name.upper()}" for name in Settings.model_fields}
    for name in ("receiver", "worker", "dashboard"):
        unknown = set(_settings_of(services[name])) - fields
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_services_run_real_cli_commands(services):
    commands = typer.main.get_command(cli).commands
    for name in ("receiver", "worker", "dashboard"):
        assert services[name]["command"] == [name]
        assert name in commands


def test_both_services_reach_the_compose_broker(services):
    listener = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for name in ("receiver", "worker"):
        bootstrap = _settings_of(services[name])["ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS"]
        assert listener == f"PLAINTEXT://{bootstrap}"


def test_ports_published_are_the_ports_served(services):
    receiver = _settings_of(services["receiver"])
    worker = _settings_of(services["worker"])
    assert (
        f"{receiver['ENGAGEMENT_RECEIVER_PORT']}:" in services["receiver"]["ports"][0]
    )
    assert f":{worker['ENGAGEMENT_WORKER_WEB_PORT']}" in services["worker"]["ports"][0]
    dashboard = _settings_of(services["dashboard"])
    port = dashboard["ENGAGEMENT_DASHBOARD_PORT"]
    assert services["dashboard"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert dashboard["ENGAGEMENT_DUCKDB_PATH"] == worker["ENGAGEMENT_DUCKDB_PATH"]
    assert services["dashboard"]["volumes"] == services["worker"]["volumes"]
    assert (
        receiver["ENGAGEMENT_KAFKA_TOPIC_PARTITIONS"]
        == (worker["ENGAGEMENT_KAFKA_TOPIC_PARTITIONS"])
    )
