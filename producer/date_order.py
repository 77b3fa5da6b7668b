"""Evidence in the dates of one CSV or JSON lines file about their day and month order.

A layout whose date formats write the day and the month as numbers reads a
file in the reverse order without an error whenever the day is 12 or less.
The US presets read 03/04/2026 as March 4, even when the bank meant April 3.
JSON lines accept MM/DD/YYYY as well as ISO 8601, so they read such dates
month first in the same way.
Only a date that is real in one order alone, such as 25/03/2026, shows which
order the file uses. ``DateOrderCheck`` records those dates row by row, so
the reader can stop a file whose dates prove the reverse order before
anything is published, and warn about a file that mixes both orders.
"""

from __future__ import annotations

from typing import Callable

from producer.values import DateFit, DateReading, DayMonthOrder, day_month_order_fix, format_pattern

# The maximum number of lines with possibly swapped dates that a warning lists. Its count covers them all.
SHOWN_LINES = 5


class DateOrderCheck:
    """Evidence, from the rows read so far, about whether a file's dates are in the layout's day and month order."""

    def __init__(
        self,
        order: DayMonthOrder,
        *,
        reader_name: str,
        input_label: str,
        order_fix: Callable[[str], str] = day_month_order_fix,
    ) -> None:
        self.order = order
        self.reader_name = reader_name  # what reads the dates, such as "the chase layout"
        self.input_label = input_label  # how messages name the input, such as "the file 'export.csv'"
        # The fix for a file in the reverse order, built from the format its dates were read in.
        self.order_fix = order_fix
        # False once the first date turned out to be in another of the layout's
        # formats, such as ISO 8601. Then the file is not checked further.
        self.applies = True
        self._first_date_read = False
        self.other_order_rows = 0
        self.first_other_order: tuple[int, str, DateFit] | None = None  # line, text, fit
        self.first_layout_order: tuple[int, str, DateFit] | None = None
        self.either_order_purchases = 0
        self.either_order_lines: list[int] = []  # the first SHOWN_LINES of them

    def observe(self, line: int, text: str | None) -> DateReading | None:
        """Record what the date ``text`` on ``line`` shows about the order, and return how it reads."""
        if not text:
            return None
        fit = self.order.read(text)
        if fit is None:
            # NOTE: the first date decides. A file whose first date is ISO 8601
            # and whose later dates are MM/DD/YYYY is not checked.
            if not self._first_date_read and self.order.fits_other_format(text):
                self.applies = False
            return None
        self._first_date_read = True
        if fit.reading is DateReading.OTHER_ORDER_ONLY:
            self.other_order_rows += 1
            if self.first_other_order is None:
                self.first_other_order = (line, text.strip(), fit)
        elif fit.reading is DateReading.LAYOUT_ORDER_ONLY and self.first_layout_order is None:
            self.first_layout_order = (line, text.strip(), fit)
        return fit.reading

    def count_purchase(self, line: int) -> None:
        """Count a purchase read from ``line`` whose date reads as a different real date in each order."""
        self.either_order_purchases += 1
        if len(self.either_order_lines) < SHOWN_LINES:
            self.either_order_lines.append(line)

    @property
    def settled(self) -> bool:
        """Whether further rows cannot make ``proves_other_order`` true."""
        return not self.applies or self.first_layout_order is not None

    @property
    def proves_other_order(self) -> bool:
        """Whether some dates read only in the reverse order and none only in the layout's order.

        NOTE: a file whose every date has a day of 12 or less proves
        neither order. It is read in the layout's order without a warning,
        because nothing in it shows that order to be wrong.
        """
        return self.applies and self.first_other_order is not None and self.first_layout_order is None

    def swapped_order_message(self) -> str:
        """Build the error for a file whose dates prove the reverse order; call only when ``proves_other_order``."""
        line, text, fit = self.first_other_order
        first, other = self.order.first, self.order.other
        more = self.other_order_rows - 1
        also = f", and {more} more row(s) have a date that is real only {other} first" if more else ""
        return (
            f"the dates in {self.input_label} put the {other} first, but {self.reader_name} reads "
            f"them {first} first ({format_pattern(fit.layout)}): line {line} has {text!r}, which has no month "
            f"{fit.month} when read {first} first{also}. No row has a date that is real only {first} first. "
            f"Nothing was published, because in a file written {other} first every date whose day and month are "
            f"both 12 or less would be read with the two swapped. To read the file, {self.order_fix(fit.layout)}"
        )

    def swapped_dates_warning(self) -> str | None:
        """Build the warning for purchases whose date may be read with day and month swapped, or return None.

        It applies when some date is real only in the reverse order and some
        purchase has a date that is real in both orders. That is a file that
        mixes the two orders, or an input that can be read only once, such as
        standard input from a pipe, which could not be checked before publishing.
        """
        if not self.applies or self.first_other_order is None or not self.either_order_purchases:
            return None
        line, text, fit = self.first_other_order
        first, other = self.order.first, self.order.other
        evidence = f"line {line} has {text!r}, which is a real date only {other} first"
        if self.first_layout_order is not None:
            layout_line, layout_text, _ = self.first_layout_order
            evidence += f", and line {layout_line} has {layout_text!r}, which is a real date only {first} first"
        lines = ", ".join(str(number) for number in self.either_order_lines)
        if self.either_order_purchases > len(self.either_order_lines):
            lines += " and more"
        where = f"line {lines}" if self.either_order_purchases == 1 else f"lines {lines}"
        text = (
            f"{evidence}. {self.either_order_purchases} purchase row(s) ({where}) have a date whose day and "
            f"month are both 12 or less, were read {first} first ({format_pattern(fit.layout)}) and may have the "
            "day and month swapped; check them against the statement"
        )
        if self.first_layout_order is None:
            text += f". If every date puts the {other} first, {self.order_fix(fit.layout)}"
        return text
