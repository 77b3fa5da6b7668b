"""What a point is worth: cents per point for each reward program.

Defaults come from ``rewardpilot/data/valuations.json``; a caller may pass
overrides (``{"Amex Membership Rewards": Decimal("1.5")}``) for one
recommendation, e.g. a user's own valuations.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

MAX_CENTS_PER_POINT = Decimal("100")


class ProgramValuation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cents_per_point: Annotated[Decimal, Field(ge=0, le=MAX_CENTS_PER_POINT)]
    display: str
    basis: Literal["fixed", "estimate"]
    source: str
    as_of: str
    note: str = ""
    floor_cents: Decimal | None = None
    floor_what: str = ""
    floor_source: str = ""


class ValuationTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    about: str = ""
    programs: dict[str, ProgramValuation]

    def defaults(self) -> dict[str, Decimal]:
        return {name: program.cents_per_point for name, program in self.programs.items()}

    def merged(self, overrides: Mapping[str, object] | None) -> dict[str, Decimal]:
        """Defaults with ``overrides`` applied; raises ValueError for an unknown program, cash back or a bad value."""
        values = self.defaults()
        for program, value in (overrides or {}).items():
            check_settable_program(program)
            if program not in self.programs:
                known = ", ".join(sorted(self.programs))
                raise ValueError(f"no valuation program {program!r}; known programs: {known}")
            values[program] = parse_cents(program, value)
        return values

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ValuationTable":
        if path is None:
            text = files("rewardpilot").joinpath("data", "valuations.json").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.model_validate(json.loads(text))


# The program of every card that earns dollars (unit USD), as rewardpilot.engine.catalog.Card requires.
CASH_BACK_PROGRAM = "cash back"


class FixedValuationError(ValueError):
    """A valuation override for cash back, which is always worth its face value."""


def check_settable_program(program: str) -> None:
    """Raise FixedValuationError when ``program`` is cash back, whose value per unit no user may change.

    Cash back is earned in dollars, so a cent of it is worth one cent. A
    stored override would multiply the cash value of every cash back card.
    """
    if program == CASH_BACK_PROGRAM:
        raise FixedValuationError(
            f"valuation program {program!r} cannot be set: cash back is paid in dollars, so it is always worth "
            "its face value (1 cent per cent earned). Set the value of a points or miles program instead."
        )


def parse_cents(program: str, value: object) -> Decimal:
    """A cents-per-point value as a Decimal between 0 and 100."""
    try:
        cents = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"valuation for {program!r} must be a number of cents, got {value!r}") from None
    if not cents.is_finite() or cents < 0 or cents > MAX_CENTS_PER_POINT:
        raise ValueError(f"valuation for {program!r} must be between 0 and {MAX_CENTS_PER_POINT} cents, got {value!r}")
    return cents


@cache
def default_valuations() -> ValuationTable:
    return ValuationTable.load()
