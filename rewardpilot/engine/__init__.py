"""The rules engine: card catalog, point valuations, MCC categories, recommendations.

    from rewardpilot.engine import RulesEngine, UnknownCardError
    engine = RulesEngine.default()
    recommendation = engine.recommend(transaction, ["amex-gold", "citi-double-cash"])

``recommend`` raises UnknownCardError, NoUsableCardError and InvalidModeError,
all ValueError subclasses, for bad input.
"""

from rewardpilot.engine.catalog import Card, Catalog, default_catalog
from rewardpilot.engine.categories import CategoryMap, Placement, default_categories
from rewardpilot.engine.errors import InvalidModeError, NoUsableCardError, UnknownCardError
from rewardpilot.engine.rules import RulesEngine
from rewardpilot.engine.valuations import ValuationTable, default_valuations

__all__ = [
    "Card",
    "Catalog",
    "CategoryMap",
    "InvalidModeError",
    "NoUsableCardError",
    "Placement",
    "RulesEngine",
    "UnknownCardError",
    "ValuationTable",
    "default_catalog",
    "default_categories",
    "default_valuations",
]
