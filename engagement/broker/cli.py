"""`engagement broker start|stop|status`: the local broker from a terminal."""

from __future__ import annotations

from typing import NoReturn

import typer

from engagement.broker.local import LocalBroker
from engagement.broker.probe import kafka_answers
from engagement.broker.toolchain import KAFKA_VERSION, jars_resolved
from engagement.errors import EngagementError
from engagement.settings import Settings

# A broker someone else runs is either up or not; it has no start-up to wait for.
EXTERNAL_TIMEOUT_SECONDS = 10.0

broker_app = typer.Typer(
    help=f"Run the project's own single-node Kafka {KAFKA_VERSION} broker.",
    no_args_is_help=True,
)


@broker_app.command()
def start() -> None:
    """Start the local broker (fetching its jars once) and wait until it answers."""
    settings = Settings()
    if settings.kafka_bootstrap_servers:
        _check_external(settings.kafka_bootstrap_servers)
        return

    broker = LocalBroker(settings)
    was_running = broker.status().running
    if not jars_resolved(broker.lib_cache):
        typer.echo(
            f"The Kafka {KAFKA_VERSION} jars are not cached yet; this first start "
            "fetches them with Maven.",
            err=True,
        )

    try:
        elapsed = broker.start()
    except EngagementError as exc:
        _fail(str(exc))

    if was_running:
        typer.echo(
            f"Kafka {KAFKA_VERSION} was already running at {broker.bootstrap_servers}."
        )
    else:
        typer.echo(
            f"Kafka {KAFKA_VERSION} answers at {broker.bootstrap_servers} "
            f"(started in {elapsed:.1f} s; log: {broker.log_file})."
        )


@broker_app.command()
def stop(
    timeout: float = typer.Option(30.0, help="Seconds to wait before SIGKILL."),
) -> None:
    """Stop the local broker."""
    broker = LocalBroker(Settings())
    try:
        stopped = broker.stop(timeout=timeout)
    except EngagementError as exc:
        _fail(str(exc))

    if stopped:
        typer.echo("Stopped the local Kafka broker.")
    else:
        typer.echo("No local Kafka broker was running.")


@broker_app.command()
def status() -> None:
    """Say whether the broker runs; exit 0 when it does, 1 when it does not."""
    settings = Settings()
    if settings.kafka_bootstrap_servers:
        _check_external(settings.kafka_bootstrap_servers)
        return

    state = LocalBroker(settings).status()
    if not state.running:
        typer.echo(f"The local Kafka broker is not running (home: {state.home}).")
        raise typer.Exit(1)

    typer.echo(
        f"Kafka {state.version} is running as pid {state.pid} at "
        f"{state.bootstrap_servers} (log: {state.log_file})."
    )


def _check_external(servers: str) -> None:
    # A configured broker belongs to someone else: check it, never start one.
    if kafka_answers(servers, EXTERNAL_TIMEOUT_SECONDS):
        typer.echo(
            f"ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS is set, so no local broker is "
            f"used; the broker at {servers} answers."
        )
        return

    _fail(
        f"The broker at {servers} (ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS) did not "
        f"answer a metadata request within {EXTERNAL_TIMEOUT_SECONDS:.0f} s. Start "
        "it, correct the address, or unset ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS to "
        "use the local broker."
    )


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(1)
