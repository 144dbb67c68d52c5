"""Shared fixtures: the shared/ folder, and one real Kafka broker per session.

When ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS names a broker, the tests use it;
otherwise they start the project's local broker (and stop it afterwards if
they started it). Every test uses fresh topic and group names.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engagement.broker import LocalBroker
from engagement.broker.toolchain import resolve_jars
from engagement.runtime import broker_for
from engagement.settings import Settings
from tests.streams import Job

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
# The jars are shared with ordinary use through the default cache, so Maven
# runs at most once, not once per test.
LIB_CACHE = REPO / "var" / "kafka" / "lib"

MakeBroker = Callable[..., LocalBroker]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"The shared fixtures are missing: {FIXTURES} does not exist.")
    return FIXTURES


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with broker_for(Settings()) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def stream_database(
    fixtures_dir: Path, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """The database the demo writes for a shared stream, made once a session."""
    from engagement.demo import run_demo

    made: dict[str, Path] = {}

    def database(name: str) -> Path:
        if name not in made:
            db_path = tmp_path_factory.mktemp("streams") / "engagement.duckdb"
            settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
            run_demo(settings, fixtures_dir / name, db_path, None)
            made[name] = db_path
        return made[name]

    return database


@pytest.fixture
def unique_name() -> str:
    return f"test-{secrets.token_hex(4)}"


def free_ports(count: int) -> list[int]:
    # All sockets stay open until every port is picked, so no two are equal.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def lib_cache() -> Path:
    resolve_jars(LIB_CACHE)
    return LIB_CACHE


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[MakeBroker]:
    """Brokers on fresh ports and homes; whatever they left running is stopped."""
    made: list[LocalBroker] = []

    def make(lib: Path = LIB_CACHE, **overrides: object) -> LocalBroker:
        port, controller_port = free_ports(2)
        values = {
            "broker_home": tmp_path / f"home-{len(made)}",
            "broker_port": port,
            "broker_controller_port": controller_port,
            "broker_start_timeout_seconds": 60.0,
            **overrides,
        }
        broker = LocalBroker(Settings(**values), lib_cache=lib)
        made.append(broker)
        return broker

    yield make

    for broker in made:
        broker.stop(timeout=10)


@pytest.fixture
def job(kafka_bootstrap, unique_name, tmp_path) -> Job:
    """Fresh topic, consumer group and snapshot location for one worker test."""
    return Job(
        bootstrap=kafka_bootstrap,
        topic=f"{unique_name}.alpaclass.webhooks",
        app_id=f"{unique_name}-worker",
        db_path=tmp_path / "engagement.duckdb",
        root=tmp_path,
    )
