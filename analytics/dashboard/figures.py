"""The dashboard's plots, as Plotly figures the page draws with plotly.js."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from analytics.dashboard.data import FUNNEL_STAGES, RISK_BANDS, Dashboard

BAND_COLOURS = {
    "onboarding": "#7aa6d8",
    "active": "#3c9a5f",
    "cooling": "#e3b23c",
    "at_risk": "#e07b39",
    "churned": "#c0392b",
}
BAND_NAMES = {
    "onboarding": "Onboarding",
    "active": "Active",
    "cooling": "Cooling",
    "at_risk": "At risk",
    "churned": "Churned",
}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def _layout(figure: go.Figure, **extra: object) -> go.Figure:
    layout: dict[str, object] = {
        "template": "plotly_white",
        "font": {"family": FONT, "size": 12},
        "margin": {"l": 48, "r": 16, "t": 32, "b": 40},
        "legend": {"orientation": "h", "y": -0.18},
        "hovermode": "x unified",
        "height": 320,
    }
    figure.update_layout(**{**layout, **extra})
    return figure


def daily_active(dashboard: Dashboard) -> go.Figure:
    days = [day.isoformat() for day, _, _ in dashboard.daily]
    figure = go.Figure(
        [
            go.Bar(
                x=days,
                y=[count for _, count, _ in dashboard.daily],
                name="Active students",
                marker_color="#9bbce0",
            ),
            go.Scatter(
                x=days,
                y=[round(mean, 2) for _, _, mean in dashboard.daily],
                name="7-day mean",
                mode="lines",
                line={"color": "#1f4e89", "width": 2.5},
            ),
        ]
    )
    return _layout(figure, yaxis={"rangemode": "tozero", "title": "students"})


def risk_bands(dashboard: Dashboard) -> go.Figure:
    days = [day.isoformat() for day, _ in dashboard.risk_bands]
    figure = go.Figure(
        [
            go.Scatter(
                x=days,
                y=[counts[band] for _, counts in dashboard.risk_bands],
                name=BAND_NAMES[band],
                mode="lines",
                stackgroup="bands",
                line={"color": BAND_COLOURS[band], "width": 1},
            )
            for band in RISK_BANDS
        ]
    )
    return _layout(figure, yaxis={"title": "student × course"})


def cohorts(dashboard: Dashboard) -> go.Figure:
    weeks = sorted({row["cohort_week"] for row in dashboard.cohorts})
    since = sorted({row["weeks_since_registration"] for row in dashboard.cohorts})
    cells = {
        (row["cohort_week"], row["weeks_since_registration"]): row
        for row in dashboard.cohorts
    }
    share: list[list[float | None]] = []
    text: list[list[str]] = []
    for week in weeks:
        share.append([])
        text.append([])
        for offset in since:
            row = cells.get((week, offset))
            share[-1].append(None if row is None else round(row["share_active"], 4))
            text[-1].append(
                "" if row is None else f"{row['active_students']}/{row['cohort_size']}"
            )
    figure = go.Figure(
        go.Heatmap(
            z=share,
            x=[str(offset) for offset in since],
            y=[f"{week:%Y-%m-%d}" for week in weeks],
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "active", "tickformat": ".0%"},
            hovertemplate="registered week of %{y}<br>week %{x}: "
            "%{z:.0%} active (%{text})<extra></extra>",
        )
    )
    return _layout(
        figure,
        hovermode="closest",
        xaxis={"title": "weeks since registration", "type": "category"},
        yaxis={"title": "registration week", "type": "category", "autorange": True},
    )


def funnel(dashboard: Dashboard) -> go.Figure:
    """One bar per stage and course, each labelled with its share of starters."""
    labels = [label for _, label in FUNNEL_STAGES]
    bars = []
    for row in dashboard.funnel:
        counts = [row[stage] for stage, _ in FUNNEL_STAGES]
        started = counts[0] or 1
        bars.append(
            go.Bar(
                # Plotly draws a subset of HTML in text: a name is not markup.
                name=html.escape(row["course_name"] or row["course_id"], quote=False),
                y=labels,
                x=counts,
                orientation="h",
                text=[f"{count} ({count / started:.0%})" for count in counts],
                textposition="outside",
                cliponaxis=False,
                hovertemplate="%{y}: %{text}<extra>%{fullData.name}</extra>",
            )
        )
    return _layout(
        go.Figure(bars),
        hovermode="closest",
        barmode="group",
        uniformtext={"minsize": 10, "mode": "show"},
        margin={"l": 150, "r": 56, "t": 32, "b": 40},
        yaxis={"autorange": "reversed"},
        xaxis={"title": "students", "rangemode": "tozero"},
        height=360,
    )


def all_figures(dashboard: Dashboard) -> dict[str, go.Figure]:
    return {
        "daily-active": daily_active(dashboard),
        "risk-bands": risk_bands(dashboard),
        "cohorts": cohorts(dashboard),
        "funnel": funnel(dashboard),
    }
