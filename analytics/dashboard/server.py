"""``engagement dashboard``: the analysis views as a page in a browser.

Each request opens the database read-only, as analysts do, and closes it when
the page is built: the worker replaces the file by renaming a new one over it,
so the next request reads the next snapshot and no reader ever holds the
worker back. The page asks ``/version`` now and then and reloads itself when
the file has been replaced.

The page shows students' names and e-mails, so the server binds to the
loopback address unless told otherwise, and no response is cached.
"""

from __future__ import annotations

import asyncio
import csv
import io
import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import plotly.io
from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from plotly.offline import get_plotlyjs

from analytics.catalog import connect_readonly
from analytics.dashboard import data, figures
from analytics.query import explain

logger = logging.getLogger(__name__)

LIST_ROWS = 50
ALERT_ROWS = 20
# Pages built at once: each runs a dozen queries on DuckDB's own threads.
CONCURRENT_PAGES = 2
# Requests waiting for one of those beyond which the answer is 503.
WAITING_PAGES = 16
BUSY_PAGE = (
    '<!doctype html><meta http-equiv="refresh" content="5">'
    "<p>The dashboard is busy building other pages; this one follows in a few "
    "seconds.</p>"
)
REFRESH_SECONDS = 10
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; frame-ancestors 'none'"
    ),
}
TREND_STEADY = 0.1
# Webhooks began long after 2000; as_of may be at most a year ahead.
FIRST_AS_OF = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_AS_OF = timedelta(days=366)
# The bands in order of concern, for sorting the list by band.
BAND_ORDER = {band: rank for rank, band in enumerate(data.RISK_BANDS)}
CSV_DIGITS = {"days_since_last_seen": 2, "trend": 3, "progress": 3, "risk_score": 1}


class PageError(Exception):
    """A request the page cannot answer; the message says why, for the page."""

    def __init__(
        self, status: int, message: str, choices: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.choices = choices or {}  # what the pickers can still offer


@dataclass(frozen=True)
class Request:
    school: str | None
    course: str | None
    as_of: datetime | None  # None: now

    @classmethod
    def parse(cls, query: Any) -> Request:
        return cls(
            school=query.get("school") or None,
            course=query.get("course") or None,
            as_of=parse_as_of(query.get("as_of") or None),
        )


def parse_as_of(value: str | None) -> datetime | None:
    """A date (its midnight, UTC) or an ISO 8601 instant; None for now."""
    if value is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(value)
    except ValueError:
        raise PageError(
            400,
            f"{value[:40]!r} is not a date: give one as 2026-12-01 "
            "(or an instant, 2026-12-01T12:00:00Z).",
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    # The state is today's, so a far future shows nothing more; and the
    # plots' ranges reach back 13 weeks from as_of.
    last = datetime.now(UTC) + FUTURE_AS_OF
    try:
        in_range = FIRST_AS_OF <= moment <= last
    except OverflowError:  # an offset that takes it past year 1 or 9999
        in_range = False
    if not in_range:
        raise PageError(
            400,
            f"{value[:40]!r} is out of range: as of a date from "
            f"{FIRST_AS_OF:%Y-%m-%d} up to a year from now.",
        )
    return moment


def database_version(db_path: Path) -> str:
    """Changes whenever the worker renames a new database over the old."""
    try:
        stat = db_path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"


@cache
def _plotly_js() -> bytes:
    return get_plotlyjs().encode()


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("analytics.dashboard", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["band_order"] = BAND_ORDER
    environment.filters.update(
        number=format_number,
        percent=format_percent,
        instant=format_instant,
        trend=format_trend,
        days=format_days,
    )
    return environment


def format_number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def format_percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def format_days(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def format_instant(value: datetime | None) -> str:
    return "–" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def format_trend(value: float | None) -> str:
    """churn_risk's trend in words: down or up by how much, or steady."""
    if value is None:
        return "–"
    if abs(value) < TREND_STEADY:
        return "steady"
    return f"{'down' if value < 0 else 'up'} {abs(value):.0%}"


class Dashboard:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.pages = asyncio.Semaphore(CONCURRENT_PAGES)
        self.waiting = 0

    async def page(self, request: web.Request) -> web.Response:
        status, html = await self._build(request, self._page)
        return web.Response(
            text=html, status=status, content_type="text/html", headers=_headers()
        )

    async def at_risk_csv(self, request: web.Request) -> web.Response:
        status, body, name = await self._build(request, self._csv)
        if status != 200:
            return web.Response(text=body, status=status, headers=_headers())
        return web.Response(
            text=body,
            content_type="text/csv",
            charset="utf-8",
            headers=_headers({"Content-Disposition": f'attachment; filename="{name}"'}),
        )

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"version": database_version(self.db_path)}, headers=_headers()
        )

    async def plotly_js(self, request: web.Request) -> web.Response:
        return web.Response(
            body=_plotly_js(),
            content_type="application/javascript",
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    async def _build(self, request: web.Request, build: Any) -> Any:
        if self.waiting >= WAITING_PAGES:
            raise web.HTTPServiceUnavailable(
                text=BUSY_PAGE,
                content_type="text/html",
                headers={**_headers(), "Retry-After": "5"},
            )
        self.waiting += 1
        try:
            await self.pages.acquire()
        finally:
            self.waiting -= 1
        try:
            # A page nobody waits for any more would only delay the next ones.
            if request.transport is None or request.transport.is_closing():
                raise web.HTTPServiceUnavailable(text="The request was abandoned.")
            return await asyncio.to_thread(build, request.query)
        finally:
            self.pages.release()

    def _page(self, query: Any) -> tuple[int, str]:
        version = database_version(self.db_path)
        context: dict[str, Any] = {
            "first_date": FIRST_AS_OF.date().isoformat(),
            "last_date": (datetime.now(UTC) + FUTURE_AS_OF).date().isoformat(),
            "version": version,
            "refresh_seconds": REFRESH_SECONDS,
            "db_path": str(self.db_path),
        }
        try:
            wanted = Request.parse(query)
            context["as_of_value"] = _as_of_value(wanted.as_of)
            context.update(self._dashboard(wanted))
            status = 200
        except PageError as error:
            context.update(error.choices or self._pickers(query), error=str(error))
            status = error.status
        return status, render_page(context)

    def _dashboard(self, wanted: Request) -> dict[str, Any]:
        with self._connect() as connection:
            try:
                selection, choices = _select(connection, wanted)
                dashboard = data.load(connection, selection, LIST_ROWS, ALERT_ROWS)
            except duckdb.Error as error:
                raise self._failed(error) from None
        return page_context(dashboard, choices, wanted.as_of)

    def _pickers(self, query: Any) -> dict[str, Any]:
        """An error page's pickers, still on the school asked for if it exists."""
        wanted = Request(query.get("school") or None, query.get("course") or None, None)
        try:
            with self._connect() as connection:
                return _select(connection, wanted)[1]
        except PageError as error:
            return error.choices
        except duckdb.Error:
            return {}

    def _csv(self, query: Any) -> tuple[int, str, str]:
        try:
            wanted = Request.parse(query)
            with self._connect() as connection:
                try:
                    selection, _ = _select(connection, wanted)
                    if wanted.course is not None and selection.course is None:
                        raise PageError(404, "That course is not one of this school's.")
                    rows = data.at_risk_rows(connection, selection)
                except duckdb.Error as error:
                    raise self._failed(error) from None
        except PageError as error:
            return error.status, str(error), ""
        return 200, at_risk_csv(rows), _csv_name(selection)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if not self.db_path.is_file():
            raise PageError(
                503,
                f"{self.db_path} does not exist yet: the worker writes it at its "
                "first snapshot, and this page shows it as soon as it does.",
            )
        try:
            return connect_readonly(self.db_path)
        except duckdb.Error as error:
            raise self._failed(error) from None

    def _failed(self, error: duckdb.Error) -> PageError:
        explained = explain(self.db_path, error)
        logger.warning("Reading the database failed: %s", explained)
        return PageError(500, explained)


def page_context(
    dashboard: data.Dashboard, choices: dict[str, Any], as_of: datetime | None
) -> dict[str, Any]:
    """What page.html needs besides the pickers' choices."""
    charts = {
        name: plotly.io.to_json(figure, validate=False)
        for name, figure in figures.all_figures(dashboard).items()
    }
    return {
        **choices,
        "dashboard": dashboard,
        "charts": charts,
        "headline": dashboard.headline,
        "csv_query": _query_string(dashboard.selection, as_of),
    }


def render_page(context: dict[str, Any]) -> str:
    return _environment().get_template("page.html").render(context)


def _select(
    connection: duckdb.DuckDBPyConnection, wanted: Request
) -> tuple[data.Selection, dict[str, Any]]:
    """The selection a request asks for, with the choices the pickers offer."""
    schools = data.schools(connection)
    if not schools:
        raise PageError(
            503,
            "The database has no school yet: the worker has not snapshotted "
            "any event. This page reloads when it does.",
        )
    team = wanted.school or schools[0][0]
    if team not in dict(schools):
        raise PageError(
            404,
            f"No school {team[:64]!r} in the database.",
            {"schools": schools},
        )
    courses = data.courses(connection, team)
    notice = None
    course = wanted.course
    if course is not None and course not in dict(courses):
        notice = "That course is not one of this school's: showing all its courses."
        course = None
    as_of = wanted.as_of or datetime.now(UTC)
    choices = {
        "schools": schools,
        "courses": courses,
        "course_names": dict(courses),
        "school": team,
        "school_name": dict(schools)[team],
        "course": course,
        "course_name": dict(courses).get(course) if course else None,
        "notice": notice,
        "as_of": as_of,
        "as_of_is_now": wanted.as_of is None,
    }
    return data.Selection(team, course, as_of), choices


def _as_of_value(as_of: datetime | None) -> str:
    return "" if as_of is None else as_of.astimezone(UTC).date().isoformat()


def _query_string(selection: data.Selection, as_of: datetime | None) -> str:
    query = {"school": selection.team}
    if selection.course is not None:
        query["course"] = selection.course
    if as_of is not None:
        query["as_of"] = as_of.isoformat()
    return urlencode(query)


def _csv_name(selection: data.Selection) -> str:
    parts = [selection.team or "no-school"]
    parts += [selection.course] if selection.course else []
    names = "-".join(re.sub(r"[^A-Za-z0-9_-]", "_", part)[:40] for part in parts)
    return f"at-risk-{names}-{selection.as_of.astimezone(UTC):%Y-%m-%d}.csv"


def at_risk_csv(rows: list[dict[str, Any]]) -> str:
    """The at-risk rows as CSV for a spreadsheet.

    It starts with a byte-order mark, without which Excel reads UTF-8 as
    Latin-1; numbers are rounded to what the page shows and a little more;
    cells that a spreadsheet would run as a formula are made text.
    """
    out = io.StringIO()
    out.write("\ufeff")
    # CRLF, as RFC 4180 has it: the writer quotes a field holding any character
    # of the line terminator, so a lone CR in a name cannot end the row.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(data.AT_RISK_COLUMNS)
    for row in rows:
        writer.writerow(_csv_cell(name, row[name]) for name in data.AT_RISK_COLUMNS)
    return out.getvalue()


def _csv_cell(name: str, value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, float) and name in CSV_DIGITS:
        return round(value, CSV_DIGITS[name])
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**SECURITY_HEADERS, **(extra or {})}


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> set[str]:
    """The Host header names to answer.

    A page on another site can point its own name at 127.0.0.1 and read
    what a loopback server answers to it (DNS rebinding); refusing names
    other than the machine's own stops that, even when bound to every
    address (as in a container whose port is published on loopback).
    """
    names = {"127.0.0.1", "localhost", "::1", *(name.lower() for name in extra)}
    if bound not in ("0.0.0.0", "::", ""):
        names.add(bound.strip("[]").lower())
    return names


def guard(hosts: set[str]):
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            host = (request.url.host or "").strip("[]").lower()
        except ValueError:  # a Host header with a port that is no port
            host = ""
        if host not in hosts:
            return web.Response(
                status=421,
                text="This dashboard answers only to its own address.",
                headers=_headers(),
            )
        try:
            response = await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            logger.exception("The dashboard could not answer %s", request.path)
            response = web.Response(
                status=500,
                text="The dashboard could not answer: its log says why.",
                headers=_headers(),
            )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return middleware


def create_app(
    db_path: Path, host: str = "127.0.0.1", extra_hosts: Iterable[str] = ()
) -> web.Application:
    dashboard = Dashboard(db_path)
    app = web.Application(middlewares=[guard(allowed_hosts(host, extra_hosts))])
    app.router.add_get("/", dashboard.page)
    app.router.add_get("/at-risk.csv", dashboard.at_risk_csv)
    app.router.add_get("/version", dashboard.version)
    app.router.add_get("/static/plotly.min.js", dashboard.plotly_js)
    static = resources.files("analytics.dashboard").joinpath("static")
    app.router.add_static("/static/", Path(str(static)), append_version=False)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(db_path: Path, host: str, port: int, extra_hosts: Iterable[str] = ()) -> None:
    if not is_loopback(host):
        logger.warning(
            "The dashboard shows students' names and e-mails, and %s is not a "
            "loopback address: other machines can read it",
            host,
        )
    logger.info("Dashboard of %s at http://%s:%d/", db_path, host, port)
    web.run_app(
        create_app(db_path, host, extra_hosts),
        host=host,
        port=port,
        access_log=None,
        print=None,
    )
