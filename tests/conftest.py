"""Shared fixtures: the shared/ folder, and one real Kafka broker per session.

When ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS names a broker, the tests use it;
otherwise they start the project's local broker (and stop it afterwards if
they started it). Every test uses fresh topic and group names.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from engagement.runtime import broker_for
from engagement.settings import Settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"The shared fixtures are missing: {FIXTURES} does not exist.")
    return FIXTURES


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with broker_for(Settings()) as bootstrap:
        yield bootstrap


@pytest.fixture
def unique_name() -> str:
    return f"test-{secrets.token_hex(4)}"
