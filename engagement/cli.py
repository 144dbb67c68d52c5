"""The ``engagement`` command."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import sys
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from analytics.views import VIEW_NAMES
from engagement.broker.cli import broker_app
from engagement.errors import EngagementError
from engagement.settings import Settings

cli = typer.Typer(
    help="Real-time engagement analytics for Eduzz AlpaClass schools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(broker_app, name="broker", help="The local Apache Kafka broker.")
alerts_app = typer.Typer(no_args_is_help=True)
cli.add_typer(alerts_app, name="alerts", help="Inactivity alerts.")

stderr = Console(stderr=True)
logger = logging.getLogger("engagement")


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka reports every reconnect attempt at WARNING; ours say what matters.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def parse_instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time, e.g. 2026-12-01T00:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@cli.command()
def receiver() -> None:
    """Serve POST /webhooks/eduzz and forward verified bodies to Kafka."""
    from producers.receiver import run

    configure_logging()
    run(Settings())


@cli.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="Faust's log level.")] = "info",
) -> None:
    """Run the Faust worker (the same as `faust -A app.main worker`)."""
    import faust

    from app.main import app

    faust.Worker(app, loglevel=loglevel).execute_from_commandline()


@cli.command()
def run() -> None:
    """Run the broker (unless one is configured), receiver and worker until Ctrl-C."""
    from engagement.processes import start_service
    from engagement.runtime import broker_for

    configure_logging()
    settings = Settings()
    settings.require_webhook_secrets()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    with broker_for(settings) as bootstrap:
        env = {"ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        receiver = start_service(
            "receiver",
            "receiver",
            env,
            f"http://{settings.receiver_host}:{settings.receiver_port}/health",
        )
        worker = start_service("worker", "worker", env, f"{settings.worker_url}/health")
        try:
            receiver.wait_healthy(timeout=60)
            worker.wait_healthy(timeout=120)
            logger.info("Receiving webhooks at %s", settings.receiver_url)
            while not stop.wait(1.0):
                for service in (receiver, worker):
                    if service.process.poll() is not None:
                        raise EngagementError(f"The {service.name} exited; stopping.")
        finally:
            worker.stop()
            receiver.stop()


@cli.command()
def demo(
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="JSON lines, one JSON document or a JSON array of webhook bodies. "
            "Default: the sample the project ships.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    duckdb: Annotated[
        Path | None,
        typer.Option(
            help="The DuckDB file to (re)create. Default: var/demo/engagement.duckdb"
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Reference time for churn_risk. Default: now."),
    ] = None,
) -> None:
    """Run the whole job once on a file of webhooks; print churn risk and alerts."""
    from engagement.demo import run_demo

    configure_logging()
    result = run_demo(Settings(), input, duckdb, parse_instant(as_of))

    _print_rows(
        f"churn_risk as of {as_of or 'now'} (top {len(result.top)})",
        result.columns,
        result.top,
    )
    _print_rows(
        f"inactivity_alerts as of the wall clock (first {len(result.alerts)})",
        result.alert_columns,
        result.alerts,
    )
    print(orjson.dumps(result.counts()).decode())


def _print_rows(title: str, columns: list[str], rows: list) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    # Ids are long hex strings; a pipe gets 160 columns rather than rich's 80.
    Console(width=shutil.get_terminal_size((160, 24)).columns).print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        # Two decimals, unless that would show a small value (a threshold
        # of 0.001 days) as zero.
        return f"{value:.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2g}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


STATUS_MEANING = {
    200: "accepted",
    202: "accepted, spooled (Kafka was away)",
    400: "rejected, kept with its reason",
    401: "refused: signature",
    413: "refused: too large",
    415: "refused: compressed",
}


@cli.command()
def send(
    path: Annotated[
        Path,
        typer.Argument(
            help="JSON lines, one JSON document or a JSON array of webhook bodies.",
            exists=True,
            dir_okay=False,
        ),
    ],
    url: Annotated[
        str | None, typer.Option(help="The receiver's webhook URL. Default: settings.")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Deliveries in flight at once.")
    ] = 16,
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="ENGAGEMENT_SEND_SECRET",
            help="Secret to sign with. Default: ENGAGEMENT_WEBHOOK_SECRETS' first.",
        ),
    ] = None,
) -> None:
    """Backfill: POST each body of a file to a receiver, signed, with retries."""
    import asyncio

    from rich.progress import Progress

    from producers.bodies import read_bodies
    from producers.sender import send_bodies

    configure_logging()
    settings = Settings()
    if secret is None:
        if not settings.webhook_secrets:
            raise typer.BadParameter(
                "give --secret, or set ENGAGEMENT_WEBHOOK_SECRETS", param_hint="secret"
            )
        secret = settings.webhook_secrets[0].get_secret_value()
    bodies = read_bodies(path)
    target = url or settings.receiver_url
    with Progress(console=stderr, transient=False) as progress:
        task = progress.add_task(f"Sending {path.name}", total=len(bodies))
        summary = asyncio.run(
            send_bodies(
                bodies,
                target,
                secret,
                concurrency=concurrency,
                on_done=lambda n: progress.advance(task, n),
            )
        )

    table = Table(title=f"{summary.sent:,} bodies sent")
    table.add_column("answer")
    table.add_column("meaning")
    table.add_column("bodies", justify="right")
    for status, count in sorted(summary.by_status.items()):
        meaning = STATUS_MEANING.get(status, "server error, after retries")
        table.add_row(str(status), meaning, f"{count:,}")
    if summary.errors:
        table.add_row(
            "-", "no answer (connection error), after retries", str(summary.errors)
        )
    table.caption = f"to {target}, {summary.retries:,} retries"
    Console().print(table)
    # 400s are kept by the receiver with their reason: a backfill may hold
    # bad bodies. Anything else not 2xx means nothing of it arrived.
    failed = summary.errors + sum(
        n
        for status, n in summary.by_status.items()
        if not (200 <= status < 300 or status == 400)
    )
    raise typer.Exit(1 if failed else 0)


@cli.command()
def snapshot(
    url: Annotated[
        str | None, typer.Option(help="The worker's web URL. Default: from settings.")
    ] = None,
) -> None:
    """Ask a running worker to write a snapshot now."""
    import httpx

    target = url or Settings().worker_url
    try:
        response = httpx.post(f"{target}/snapshot", timeout=120)
    except httpx.HTTPError as error:
        raise EngagementError(
            f"No worker answered at {target} ({type(error).__name__}): is "
            "`engagement worker` (or `engagement run`) running there?"
        ) from None
    print(response.text)
    raise typer.Exit(0 if response.status_code == 200 else 1)


@cli.command()
def simulate(
    output: Annotated[
        Path | None, typer.Option(help="Write here instead of standard output.")
    ] = None,
    schools: int = 2,
    students: Annotated[int, typer.Option(help="Students per school.")] = 25,
    courses: Annotated[int, typer.Option(help="Courses per school.")] = 3,
    days: int = 45,
    end: Annotated[str, typer.Option(help="Last simulated instant.")] = (
        "2026-11-30T23:00:00Z"
    ),
    seed: int = 7,
) -> None:
    """Write simulated AlpaClass webhook traffic as JSON lines."""
    from producers.simulate import Scale
    from producers.simulate import simulate as generate

    scale = Scale(
        schools=schools,
        students_per_school=students,
        courses_per_school=courses,
        days=days,
        end=parse_instant(end),
        seed=seed,
    )
    lines = b"".join(orjson.dumps(body) + b"\n" for body in generate(scale))
    if output is None:
        sys.stdout.buffer.write(lines)
    else:
        output.write_bytes(lines)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


ViewName = Annotated[str, typer.Argument(help="A view: " + ", ".join(VIEW_NAMES) + ".")]
AsOf = Annotated[
    str | None,
    typer.Option("--as-of", help="Reference time (ISO 8601). Default: now."),
]
Team = Annotated[str | None, typer.Option("--team", help="Only this team id.")]
Course = Annotated[str | None, typer.Option("--course", help="Only this course id.")]
Database = Annotated[
    Path | None,
    typer.Option("--duckdb", help="The database file. Default: from settings."),
]


@cli.command()
def query(
    name: ViewName,
    as_of: AsOf = None,
    team: Team = None,
    course: Course = None,
    limit: Annotated[
        int | None, typer.Option(min=0, max=2**63 - 1, help="At most N rows.")
    ] = 50,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="How to print the rows.")
    ] = OutputFormat.table,
    duckdb: Database = None,
) -> None:
    """Print one of the analysis views."""
    from analytics.query import read_view

    table = read_view(
        duckdb or Settings().duckdb_path,
        name,
        parse_instant(as_of),
        team,
        course,
        limit,
    )
    if output_format is OutputFormat.csv:
        import pyarrow.csv as pa_csv

        pa_csv.write_csv(table, sys.stdout.buffer)
    elif output_format is OutputFormat.json:
        sys.stdout.buffer.write(
            orjson.dumps(table.to_pylist(), default=str, option=orjson.OPT_INDENT_2)
            + b"\n"
        )
    else:
        rows = [row.values() for row in table.to_pylist()]
        _print_rows(f"{name} ({table.num_rows} rows)", table.column_names, rows)


@cli.command()
def export(
    name: ViewName,
    output: Annotated[Path, typer.Option(help="The file to write.")],
    output_format: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format", help="File format. Default: from the file name (.parquet)."
        ),
    ] = None,
    pseudonymize: Annotated[
        bool,
        typer.Option(
            help="Replace names and e-mails with keyed hashes "
            "(key: ENGAGEMENT_PSEUDONYM_KEY)."
        ),
    ] = False,
    as_of: AsOf = None,
    team: Team = None,
    course: Course = None,
    duckdb: Database = None,
) -> None:
    """Write one of the analysis views to a CSV or Parquet file."""
    from analytics.query import export_format, read_view, write_export
    from analytics.query import pseudonymize as hide_names

    settings = Settings()
    table = read_view(
        duckdb or settings.duckdb_path, name, parse_instant(as_of), team, course
    )
    if pseudonymize:
        key = (
            settings.pseudonym_key.get_secret_value() if settings.pseudonym_key else ""
        )
        table = hide_names(table, key.encode())
    file_format = export_format(output, output_format and output_format.value)
    write_export(table, output, file_format)
    stderr.print(f"{table.num_rows} rows of {name} written to {output} ({file_format})")


@cli.command()
def dashboard(
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on. Default: 8050."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to bind. Default: 127.0.0.1; the page shows students' "
            "names and e-mails."
        ),
    ] = None,
    duckdb: Database = None,
) -> None:
    """Serve the engagement dashboard over the analysis views."""
    from analytics.dashboard.server import serve

    configure_logging()
    settings = Settings()
    serve(
        duckdb or settings.duckdb_path,
        host or settings.dashboard_host,
        port or settings.dashboard_port,
        settings.dashboard_allowed_hosts,
    )


class AlertFormat(StrEnum):
    text = "text"
    json = "json"


def _alert_line(alert: object) -> str:
    from app.alerts import Alert

    assert isinstance(alert, Alert)
    record = orjson.loads(alert.to_json())
    days = record["days_inactive"]
    parts = [
        record["detected_at"],
        f"{record['kind']:<13}",
        f"team={alert.team_id}",
        f"student={alert.student_id}",
    ]
    if alert.course_id is not None:
        parts.append(f"course={alert.course_id}")
    if alert.threshold_days is not None:
        parts.append(f"threshold={alert.threshold_days:g}d")
    if days is not None:
        parts.append(
            f"days_inactive={days:.1f}" if days >= 0.1 else f"days_inactive={days:.2g}"
        )
    if alert.catch_up:
        parts.append("catch_up")
    return " ".join(parts)


@alerts_app.command("tail")
def alerts_tail(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new alerts.")
    ] = False,
    new_only: Annotated[
        bool, typer.Option("--new", help="Skip the alerts already on the topic.")
    ] = False,
    output_format: Annotated[
        AlertFormat,
        typer.Option("--format", help="text: one line each; json: the alert."),
    ] = AlertFormat.text,
) -> None:
    """Print the alerts of the alerts topic, oldest first, then (-f) as they come.

    json prints each alert as the topic and HTTP deliveries carry it, with
    the student's name and e-mail; text leaves those out.
    """
    import asyncio

    from engagement.alerts_tail import tail_alerts

    configure_logging()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # errors say more
    settings = Settings()

    async def run() -> None:
        alerts = tail_alerts(
            settings.bootstrap_servers, settings.alerts_topic, follow, new_only
        )
        async for alert in alerts:
            if output_format is AlertFormat.json:
                sys.stdout.buffer.write(alert.to_json() + b"\n")
            else:
                sys.stdout.write(_alert_line(alert) + "\n")
            sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def main() -> None:
    try:
        cli()
    except EngagementError as error:
        stderr.print(f"[red]error:[/red] {error}", highlight=False)
        sys.exit(1)
    except ValidationError as error:
        # Settings come from the environment: name the variable, not the field.
        for problem in error.errors(include_url=False, include_input=False):
            name = "ENGAGEMENT_" + "_".join(str(p) for p in problem["loc"]).upper()
            stderr.print(f"[red]error:[/red] {name}: {problem['msg']}", highlight=False)
        sys.exit(2)
