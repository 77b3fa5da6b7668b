"""From a transaction's MCC, category text and merchant name to a reward category.

The table in ``rewardpilot/data/mcc_categories.json`` gives every MCC the
iso18245 package knows a category. A transaction is placed by the first of:

1. its MCC, when iso18245 knows the code             (confidence 0.95)
2. its category text, e.g. "grocery_pos", "Food & Drink"  (0.75)
3. its MCC's range, for an unlisted code such as 3399 in the
   airline range 3000-3350                           (0.60)
4. its merchant name, for a well-known chain such as "STARBUCKS #1234"
   in an export without MCC or category              (0.65)
5. nothing matched: "other"                          (0.50)

A category text that only means "other" (an issuer's "Shopping" or
"Merchandise") does not stop the merchant look-up: "COSTCO WHSE #0123"
under "Shopping" is a warehouse club, placed by its merchant name.

Results are cached per (mcc, text) pair, so repeated merchants cost a dict
look-up.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import iso18245

OTHER = "other"

CONFIDENCE_MCC = 0.95
CONFIDENCE_TEXT = 0.75
CONFIDENCE_MCC_RANGE = 0.60
CONFIDENCE_MERCHANT = 0.65
CONFIDENCE_FALLBACK = 0.50


class Placement(NamedTuple):
    """Where a transaction landed, and how sure the engine is of it."""

    category: str
    source: str  # "mcc" | "text" | "mcc_range" | "merchant" | "fallback"
    confidence: float


def normalize_text(text: str) -> str:
    """Lower-case; every run of characters other than letters and digits becomes one space."""
    out: list[str] = []
    gap = False
    for char in text.lower():
        if char.isalnum():
            if gap and out:
                out.append(" ")
            out.append(char)
            gap = False
        else:
            gap = True
    return "".join(out)


@cache
def iso_mccs() -> dict[str, str]:
    """Every MCC iso18245 knows, with its best description."""
    table: dict[str, str] = {}
    for mcc in iso18245.get_all_mccs():
        table[mcc.mcc] = (
            mcc.iso_description or mcc.visa_description or mcc.mastercard_description
            or mcc.usda_description or mcc.stripe_description or mcc.amex_description or mcc.alipay_description
        )
    return table


class CategoryMap:
    """MCC and text look-ups, built once from the data file."""

    def __init__(self, data: dict):
        self.version: str = data["version"]
        self.categories: dict[str, str] = dict(data["categories"])
        if OTHER not in self.categories:
            raise ValueError("the category table must define 'other'")

        explicit: dict[str, str] = {}
        for category, codes in data["codes"].items():
            self._check(category)
            for code in codes:
                if code in explicit:
                    raise ValueError(f"MCC {code} is listed under both {explicit[code]} and {category}")
                explicit[code] = category
        self._ranges: list[tuple[int, int, str]] = []
        for entry in data.get("ranges", []):
            self._check(entry["category"])
            self._ranges.append((int(entry["from"]), int(entry["to"]), entry["category"]))

        self.descriptions = iso_mccs()
        self.by_mcc: dict[str, str] = {}
        for code in self.descriptions:
            self.by_mcc[code] = explicit.get(code) or self._range_category(code) or OTHER
        # Codes listed explicitly but absent from iso18245 still count as known.
        for code, category in explicit.items():
            self.by_mcc.setdefault(code, category)

        text = data["text"]
        self._exact: dict[str, str] = {}
        for phrase, category in text["exact"].items():
            self._check(category)
            self._exact[normalize_text(phrase)] = category
        self._keywords: list[tuple[str, str]] = []
        for keyword, category in text["keywords"]:
            self._check(category)
            whole_word = keyword.endswith(" ")
            needle = " " + normalize_text(keyword) + (" " if whole_word else "")
            self._keywords.append((needle, category))

        self._merchant_keywords: list[tuple[str, str]] = []
        for keyword, category in data.get("merchants", {}).get("keywords", []):
            self._check(category)
            whole_word = keyword.endswith(" ")
            needle = " " + normalize_text(keyword) + (" " if whole_word else "")
            self._merchant_keywords.append((needle, category))

        self._placements: dict[tuple[str | None, str], Placement] = {}
        self.for_text = lru_cache(maxsize=8192)(self._for_text)
        self.for_merchant = lru_cache(maxsize=8192)(self._for_merchant)

    def _check(self, category: str) -> None:
        if category not in self.categories:
            raise ValueError(f"unknown category {category!r} in the category table")

    def _range_category(self, code: str) -> str | None:
        number = int(code)
        for start, end, category in self._ranges:
            if start <= number <= end:
                return category
        return None

    def for_mcc(self, mcc: str | None) -> str | None:
        """The category of a known MCC, else None."""
        if mcc is None:
            return None
        return self.by_mcc.get(mcc)

    def _for_text(self, text: str) -> str | None:
        if not text:
            return None
        normal = normalize_text(text)
        if not normal:
            return None
        exact = self._exact.get(normal)
        if exact is not None:
            return exact
        padded = f" {normal} "
        for needle, category in self._keywords:
            if needle in padded:
                return category
        return None

    def _for_merchant(self, merchant: str) -> str | None:
        padded = f" {normalize_text(merchant)} "
        for needle, category in self._merchant_keywords:
            if needle in padded:
                return category
        return None

    def place(self, mcc: str | None, text: str = "", merchant: str = "") -> Placement:
        """Place a transaction in a category; see the module docstring for the order.

        The merchant name is the last resort, tried only when neither the MCC
        nor the category text placed the purchase in a category other than "other".
        """
        key = (mcc, text)
        placement = self._placements.get(key)
        if placement is None:
            placement = self._place(mcc, text)
            if len(self._placements) < 65536:
                self._placements[key] = placement
        generic = placement.source == "fallback" or (placement.source == "text" and placement.category == OTHER)
        if generic and merchant:
            category = self.for_merchant(merchant)
            if category is not None:
                return Placement(category, "merchant", CONFIDENCE_MERCHANT)
        return placement

    def _place(self, mcc: str | None, text: str) -> Placement:
        category = self.for_mcc(mcc)
        if category is not None:
            return Placement(category, "mcc", CONFIDENCE_MCC)
        category = self.for_text(text)
        if category is not None:
            return Placement(category, "text", CONFIDENCE_TEXT)
        if mcc is not None and mcc.isdigit():
            category = self._range_category(mcc)
            if category is not None:
                return Placement(category, "mcc_range", CONFIDENCE_MCC_RANGE)
        return Placement(OTHER, "fallback", CONFIDENCE_FALLBACK)

    def describe(self, mcc: str) -> str | None:
        """The iso18245 description of an MCC, or None when it is unknown."""
        return self.descriptions.get(mcc)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "CategoryMap":
        if path is None:
            text = files("rewardpilot").joinpath("data", "mcc_categories.json").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls(json.loads(text))


@cache
def default_categories() -> CategoryMap:
    return CategoryMap.load()
