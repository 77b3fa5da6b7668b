"""The missed-rewards report as a picture: a self-contained HTML page with an SVG chart, or a PNG.

The HTML page loads nothing from the network: styles and the chart are
inline. The PNG needs matplotlib (the ``dev`` extra).
"""

from __future__ import annotations

import html
from decimal import Decimal
from pathlib import Path

from rewardpilot.report import Report, Totals

BAR_HEIGHT = 18
ROW_GAP = 14
LABEL_WIDTH = 170
CHART_WIDTH = 520
EARNED_COLOR = "#4c78a8"
BEST_COLOR = "#f58518"


def _rows(report: Report) -> list[tuple[str, Totals]]:
    """Sort categories by missed rewards, largest first."""
    return sorted(report.by_category.items(), key=lambda item: (-item[1].missed, item[0]))


def render_svg(report: Report) -> str:
    """Draw paired bars per category: earned with the cards used, and with the recommended cards."""
    rows = _rows(report)
    top = max([max(t.best, t.earned) for _, t in rows] + [Decimal("0.01")])
    scale = Decimal(CHART_WIDTH) / top
    row_height = 2 * BAR_HEIGHT + ROW_GAP
    height = 40 + row_height * max(1, len(rows))
    width = LABEL_WIDTH + CHART_WIDTH + 90
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="Rewards earned and possible by category">',
        f'<rect x="{LABEL_WIDTH}" y="4" width="12" height="12" fill="{EARNED_COLOR}"/>'
        f'<text x="{LABEL_WIDTH + 16}" y="15" font-size="12">earned with the cards used</text>',
        f'<rect x="{LABEL_WIDTH + 200}" y="4" width="12" height="12" fill="{BEST_COLOR}"/>'
        f'<text x="{LABEL_WIDTH + 216}" y="15" font-size="12">with the recommended cards</text>',
    ]
    for index, (name, totals) in enumerate(rows):
        y = 30 + index * row_height
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT + 4}" font-size="13" '
                     f'text-anchor="end">{html.escape(name)}</text>')
        for offset, value, color in ((0, totals.earned, EARNED_COLOR), (BAR_HEIGHT, totals.best, BEST_COLOR)):
            bar = max(Decimal(0), value) * scale
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{y + offset}" width="{bar:.1f}" height="{BAR_HEIGHT - 2}" '
                         f'fill="{color}"/>')
            parts.append(f'<text x="{LABEL_WIDTH + float(bar) + 6:.1f}" y="{y + offset + 13}" '
                         f'font-size="12">${value:,.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: Report) -> str:
    """Render a one-file page: headline figures, the chart, and the tables by card and the caps."""
    total = report.total
    title = f"Missed rewards for {report.user_id}, {report.period}"
    cards = "".join(
        f"<tr><td>{html.escape(card)}</td><td>{t.purchases}</td><td>${t.spend:,.2f}</td>"
        f"<td>${t.earned:,.2f}</td><td>${t.best:,.2f}</td><td>${t.missed:,.2f}</td></tr>"
        for card, t in sorted(report.by_card_used.items(), key=lambda item: -item[1].missed)
    )
    caps = "".join(
        f"<tr><td>{html.escape(cap.card_id)}</td><td>{html.escape(cap.tally)}</td><td>{cap.period}</td>"
        f"<td>${cap.spent_usd:,.2f} of ${cap.cap_usd:,.2f}</td><td>${cap.remaining_usd:,.2f}</td>"
        f"<td>{html.escape(cap.run_out_text())}</td></tr>"
        for cap in report.caps
    ) or '<tr><td colspan="6">No cap has spend in its current period.</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.figures {{ display: flex; gap: 2rem; margin: 1rem 0 2rem; }}
.figure b {{ display: block; font-size: 1.8rem; }}
.missed b {{ color: #c0392b; }}
table {{ border-collapse: collapse; margin: 1rem 0 2rem; }}
td, th {{ padding: 0.3rem 0.8rem; border-bottom: 1px solid #ddd; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<div class="figures">
<div class="figure"><b>${total.earned:,.2f}</b>earned on {report.purchases} purchases (${total.spend:,.2f})</div>
<div class="figure"><b>${total.best:,.2f}</b>with the recommended cards</div>
<div class="figure missed"><b>${total.missed:,.2f}</b>missed</div>
</div>
<p>Judged against {html.escape(report.judged_against())}.</p>
<h2>By category</h2>
{render_svg(report)}
<h2>By card used</h2>
<table><tr><th>card used</th><th>purchases</th><th>spend</th><th>earned</th><th>best</th><th>missed</th></tr>
{cards}</table>
<h2>Caps in their current period ({html.escape(report.caps_date_text())})</h2>
<table><tr><th>card</th><th>cap</th><th>period</th><th>spent</th><th>left</th><th>runs out at this pace</th></tr>
{caps}</table>
<p>{report.unknown_card_used} purchases did not name a known card and count as earning the recommended amount.</p>
</body></html>
"""


def render_png(report: Report, path: Path) -> None:
    """Write the by-category chart as a PNG. Raises RuntimeError when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--png needs matplotlib; install it with `pip install matplotlib`, or use --html") from None

    rows = _rows(report)
    names = [name for name, _ in rows]
    positions = range(len(rows))
    figure, axes = plt.subplots(figsize=(8, 1 + 0.6 * max(1, len(rows))))
    axes.barh([p + 0.2 for p in positions], [float(t.earned) for _, t in rows], height=0.4,
              color=EARNED_COLOR, label="earned with the cards used")
    axes.barh([p - 0.2 for p in positions], [float(t.best) for _, t in rows], height=0.4,
              color=BEST_COLOR, label="with the recommended cards")
    axes.set_yticks(list(positions), names)
    axes.invert_yaxis()
    axes.set_xlabel("USD")
    axes.set_title(f"{report.user_id}, {report.period}: ${report.total.missed:,.2f} missed")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
