"""Figures of a run: several measurements of one quantity, their median and spread."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass
class Figure:
    """One measured quantity of one row, with every repetition's value.

    ``reference`` names the row 3 (plain loop) figure that this figure's
    ratio to row 3 divides by. Only figures in ``tx/s`` get ratios.
    """

    key: str
    label: str
    unit: str
    runs: list[float] = field(default_factory=list)
    reference: str | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)

    @property
    def is_speed(self) -> bool:
        return self.unit == "tx/s"

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    @property
    def low(self) -> float | None:
        return min(self.runs) if self.runs else None

    @property
    def high(self) -> float | None:
        return max(self.runs) if self.runs else None

    def as_dict(self) -> dict:
        return {
            "key": self.key, "label": self.label, "unit": self.unit, "runs": self.runs,
            "median": self.median, "min": self.low, "max": self.high, "ratios": self.ratios,
        }


@dataclass
class RowResult:
    """The figures of one numbered row, or why it could not run."""

    number: int
    title: str
    figures: list[Figure] = field(default_factory=list)
    status: str = "ok"
    notes: list[str] = field(default_factory=list)

    def figure(self, key: str, label: str, unit: str, reference: str | None = None) -> Figure:
        """Return the figure named ``key``, adding it on first use."""
        for figure in self.figures:
            if figure.key == key:
                return figure
        figure = Figure(key, label, unit, reference=reference)
        self.figures.append(figure)
        return figure

    def as_dict(self) -> dict:
        return {
            "row": self.number, "title": self.title, "status": self.status, "notes": self.notes,
            "figures": [figure.as_dict() for figure in self.figures],
        }


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of an ascending list (fraction 0.99 for p99)."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
