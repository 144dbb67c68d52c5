"""The local broker, with real Java processes on ports chosen free at test time.

The jars are shared with ordinary use through the default cache
(``var/kafka/lib``), so Maven runs at most once, not once per test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import pytest

from engagement.broker import KAFKA_VERSION, LocalBroker, kafka_answers
from engagement.broker.toolchain import java_major_version
from engagement.errors import BrokerError
from tests.conftest import MakeBroker, free_ports

REPO = Path(__file__).resolve().parents[1]


def run_cli(broker: LocalBroker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(
        ENGAGEMENT_BROKER_HOME=str(broker.home),
        ENGAGEMENT_BROKER_PORT=str(broker.settings.broker_port),
        ENGAGEMENT_BROKER_CONTROLLER_PORT=str(broker.settings.broker_controller_port),
    )
    code = "from engagement.broker.cli import broker_app; broker_app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_start_status_stop(lib_cache: Path, make_broker: MakeBroker) -> None:
    broker = make_broker(lib_cache)

    elapsed = broker.start()

    assert 0 < elapsed < 60
    assert kafka_answers(broker.bootstrap_servers, timeout=10)
    status = broker.status()
    assert status.running
    assert status.pid is not None
    assert status.bootstrap_servers == f"127.0.0.1:{broker.settings.broker_port}"
    assert status.version == KAFKA_VERSION
    assert status.log_file.stat().st_size > 0
    assert "message.max.bytes=2097152" in broker.files.server_properties.read_text()

    # A second start finds the running broker instead of launching another.
    began = time.monotonic()
    broker.start()
    assert time.monotonic() - began < 5
    assert broker.status().pid == status.pid

    cli = run_cli(broker, "status")
    assert cli.returncode == 0, cli.stderr
    assert str(status.pid) in cli.stdout

    assert broker.stop() is True

    assert not broker.status().running
    assert not broker.pid_file.exists()
    assert not kafka_answers(broker.bootstrap_servers, timeout=2)
    assert broker.stop() is False
    cli = run_cli(broker, "status")
    assert cli.returncode == 1
    assert "not running" in cli.stdout


@pytest.mark.parametrize("which", ["broker_port", "broker_controller_port"])
def test_port_in_use_is_refused(make_broker: MakeBroker, which: str) -> None:
    broker = make_broker()
    port = getattr(broker.settings, which)

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()

        with pytest.raises(BrokerError, match=f"Port {port} .* already in use"):
            broker.start()

    assert not broker.status().running


def test_missing_java_is_explained(
    make_broker: MakeBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    with pytest.raises(BrokerError, match="Java 17 or newer"):
        make_broker().start()


def test_missing_maven_is_explained_when_jars_are_not_cached(
    make_broker: MakeBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java_only = tmp_path / "java-only-bin"
    java_only.mkdir()
    java = shutil.which("java")
    assert java is not None
    (java_only / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(java_only))

    with pytest.raises(BrokerError, match="`mvn` is not on PATH"):
        make_broker(tmp_path / "empty-lib-cache").start()


def test_broker_that_exits_reports_its_log(
    lib_cache: Path, make_broker: MakeBroker
) -> None:
    broker = make_broker(lib_cache)

    # A log directory that claims another node id: formatting is skipped
    # because meta.properties exists, and kafka.Kafka refuses to run on it.
    data_dir = broker.files.data_dir
    data_dir.mkdir(parents=True)
    (data_dir / "meta.properties").write_text(
        "version=1\ncluster.id=JlcfcUQOQWSMV5yJnrCbOA\nnode.id=7\n"
    )

    with pytest.raises(BrokerError) as raised:
        broker.start()

    message = str(raised.value)
    assert "exited while starting" in message
    assert "Stored node id 7 doesn't match" in message
    assert not broker.status().running
    assert not broker.pid_file.exists()


def test_cli_start_checks_a_configured_broker_instead(make_broker: MakeBroker) -> None:
    broker = make_broker()
    (unused,) = free_ports(1)
    env = dict(os.environ, ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{unused}")
    code = "from engagement.broker.cli import broker_app; broker_app()"

    result = subprocess.run(
        [sys.executable, "-c", code, "start"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(env, ENGAGEMENT_BROKER_HOME=str(broker.home)),
        timeout=60,
    )

    assert result.returncode == 1
    assert "did not answer" in result.stderr
    assert "Traceback" not in result.stderr
    assert not broker.home.exists()


def test_kafka_answers_is_false_without_a_broker() -> None:
    (port,) = free_ports(1)

    assert kafka_answers(f"127.0.0.1:{port}", timeout=2) is False


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert java_major_version(output) == major


def test_pom_default_matches_kafka_version() -> None:
    pom = resources.files("engagement.broker").joinpath("pom.xml").read_text()
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}

    version = ET.fromstring(pom).find("m:properties/m:kafka.version", namespace)

    assert version is not None
    assert version.text == KAFKA_VERSION
