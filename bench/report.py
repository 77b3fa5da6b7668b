"""Ratios, targets, the printed table and the JSON file of a run."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.stats import Figure, RowResult

# (description, figure key, comparison, limit key or number, factor)
TARGETS = [
    ("end to end, 2 processes >= 50% of the plain loop's", "product.e2e.2", ">=", "plain.e2e.2", 0.5),
    ("end to end, 2 processes >= 10x dramatiq", "product.e2e.2", ">=", "dramatiq.e2e", 10.0),
    ("publish >= 50% of the plain loop's publish", "product.publish", ">=", "plain.publish", 0.5),
    ("latency p50 <= 5 ms at 2,000 tx/s", "latency.p50", "<=", 5.0, 1.0),
    ("latency p99 <= 20 ms at 2,000 tx/s", "latency.p99", "<=", 20.0, 1.0),
    ("HTTP path >= 25% of the in-process rate", "http.e2e.2", ">=", "product.e2e.2", 0.25),
    ("consumer RSS growth from a tenth to all <= 10%", "memory.consumer_growth", "<=", 10.0, 1.0),
    ("publish of the CSV < 150 MB peak RSS", "memory.publish_peak", "<", 150.0, 1.0),
]
BASE_KEYS = {"1": "baseline.xadd", "2": "dramatiq.e2e"}


def index_figures(rows: list[RowResult]) -> dict[str, Figure]:
    return {figure.key: figure for row in rows for figure in row.figures}


def _ratio(figure: Figure, base: Figure | None) -> float | None:
    if base is None or not base.median or figure.median is None:
        return None
    return figure.median / base.median


def add_ratios(rows: list[RowResult]) -> None:
    """Set each speed's ratio to row 1, row 2 and its own row 3 figure, and the HTTP/in-process ratio."""
    figures = index_figures(rows)
    for figure in figures.values():
        if not figure.is_speed:
            continue
        figure.ratios = {
            "1": _ratio(figure, figures.get(BASE_KEYS["1"])),
            "2": _ratio(figure, figures.get(BASE_KEYS["2"])),
            "3": _ratio(figure, figures.get(figure.reference)) if figure.reference else None,
        }
    http = figures.get("http.e2e.2")
    if http is not None:
        http.ratios["in-process"] = _ratio(http, figures.get("product.e2e.2"))


def check_targets(rows: list[RowResult]) -> list[dict]:
    """Return each target with the measured median and whether it held (None when not measured)."""
    figures = index_figures(rows)
    checks = []
    for description, key, comparison, limit, factor in TARGETS:
        figure = figures.get(key)
        if isinstance(limit, str):
            base = figures.get(limit)
            bound = base.median * factor if base is not None and base.median is not None else None
        else:
            bound = limit * factor
        value = figure.median if figure is not None else None
        held = None
        if value is not None and bound is not None:
            held = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[comparison]
        checks.append({"target": description, "figure": key, "value": value, "bound": bound, "held": held})
    return checks


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("ms", "%", "MB") or abs(value) < 100:
        return f"{value:,.1f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{value:,.0f}"


def _spread(figure: Figure) -> str:
    if len(figure.runs) < 2:
        return "-"
    return f"{_number(figure.low, figure.unit)} - {_number(figure.high, figure.unit)}"


def _ratio_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value:.4f}x"
    return f"{value:.2f}x"


def build_table(rows: list[RowResult], machine: dict) -> Table:
    title = (f"RewardPilot Stream benchmark: {machine['cpu_model']}, {machine['nproc']} CPUs, "
             f"{machine['server']} {machine['server_version']}, Python {machine['python']}")
    table = Table(title=title, show_lines=False)
    for column in ("row", "figure", "median", "unit", "spread (min - max)", "/ row 1", "/ row 2", "/ row 3"):
        table.add_column(column, justify="left" if column in ("row", "figure", "unit") else "right")

    for row in rows:
        if row.status != "ok":
            table.add_row(f"{row.number} {row.title}", row.status, "", "", "", "", "", "")
            continue
        for position, figure in enumerate(row.figures):
            label = f"{row.number} {row.title}" if position == 0 else ""
            ratios = figure.ratios
            table.add_row(
                label, figure.label, _number(figure.median, figure.unit), figure.unit, _spread(figure),
                _ratio_text(ratios.get("1")), _ratio_text(ratios.get("2")), _ratio_text(ratios.get("3")),
            )
            if "in-process" in ratios:
                table.add_row("", "HTTP / in-process, 2 processes", _ratio_text(ratios["in-process"]), "", "", "", "", "")
    return table


def print_report(rows: list[RowResult], machine: dict, targets: list[dict], console: Console) -> None:
    console.print(build_table(rows, machine))
    for row in rows:
        for note in row.notes:
            console.print(f"row {row.number}: {note}")
    for check in targets:
        if check["held"] is None:
            continue
        else:
            verdict = "held" if check["held"] else "MISSED"
        console.print(f"target: {check['target']}: {verdict} "
                      f"(measured {_number(check['value'])}, bound {_number(check['bound'])})")


def write_json(directory: Path, stamp: str, document: dict) -> Path:
    """Write ``<stamp>.json`` and ``latest.json`` under ``directory``; return the first path."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, default=str)
    path = directory / f"{stamp}.json"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path
