"""Render a run: the rows every benchmark contributes, as a Rich table, a Markdown table, the
JSON document and a PNG chart of the ratios. Rendering takes data and returns data or files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.table import Table

from bench.stats import Target


@dataclass(frozen=True)
class TargetCheck:
    description: str
    ratio: float
    met: bool | None

    @classmethod
    def of(cls, target: Target, ratio: float) -> TargetCheck:
        return cls(target.describe(), ratio, target.met(ratio))


@dataclass(frozen=True)
class Row:
    """One line of the report; ``note`` says why a row has no figures ("not measured: ...")."""

    section: str
    subject: str
    value: float | None = None
    unit: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    targets: tuple[TargetCheck, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["targets"] = [asdict(t) for t in self.targets]
        return finite(data)  # type: ignore[return-value]


def finite(value: object) -> object:
    """JSON has no NaN: a figure that could not be computed is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def fmt_number(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def fmt_ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value / 1000:.2f} s" if value >= 10_000 else fmt_number(value, "ms")


def fmt_ratio(ratios: dict[str, float], baseline: str) -> str:
    ratio = ratios.get(baseline)
    return "-" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}x"


# Baselines with a column of their own in the table; a ratio to any other is shown by its target.
RATIO_COLUMNS = ("bare", "bare-gc", "article")


def fmt_targets(targets: Sequence[TargetCheck], ratios: dict[str, float] | None = None) -> str:
    """The targets' verdicts, after any ratio to a baseline that has no column of its own."""
    marks = {True: "met", False: "MISSED", None: "n/a"}
    others = [
        f"{ratio:.2f}x {base}"
        for base, ratio in (ratios or {}).items()
        if base not in RATIO_COLUMNS and not math.isnan(ratio)
    ]
    return "; ".join([*others, *(f"{t.description} {marks[t.met]}" for t in targets)])


COLUMNS = (
    "Benchmark",
    "Subject",
    "Throughput",
    "p50",
    "p99",
    "x bare",
    "x bare-gc",
    "x article",
    "Target",
)


def cells(row: Row) -> list[str]:
    if row.note:
        return [row.section, row.subject, row.note, "", "", "", "", "", ""]
    return [
        row.section,
        row.subject,
        fmt_number(row.value, row.unit),
        fmt_ms(row.p50_ms),
        fmt_ms(row.p99_ms),
        fmt_ratio(row.ratios, "bare"),
        fmt_ratio(row.ratios, "bare-gc"),
        fmt_ratio(row.ratios, "article"),
        fmt_targets(row.targets, row.ratios),
    ]


def rich_table(rows: Sequence[Row], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for column in COLUMNS:
        table.add_column(column, overflow="fold", justify="right" if column[0] in "Tpx" else "left")
    previous = None
    for row in rows:
        values = cells(row)
        if values[0] == previous:
            values[0] = ""
        else:
            if previous is not None:
                table.add_section()
            previous = values[0]
        table.add_row(*values)
    return table


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        values = [v.replace("|", "\\|") for v in cells(row)]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def chart_bars(rows: Sequence[Row]) -> list[tuple[str, float, float | None, bool | None]]:
    """(label, ratio to bare, the target's minimum on it, met) for every row measured against
    the bare baseline: what the PNG draws. Ratios to the article stack stay in the table."""
    bars = []
    for row in rows:
        ratio = row.ratios.get("bare")
        if row.note or ratio is None or math.isnan(ratio):
            continue
        target = next((t for t in row.targets if t.description.endswith("x bare")), None)
        minimum = float(target.description.split()[1].rstrip("x")) if target else None
        met = target.met if target else None
        bars.append((f"{row.section}\n{row.subject}", ratio, minimum, met))
    return bars


def write_png(rows: Sequence[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = chart_bars(rows)
    height = max(3.0, 0.55 * len(bars) + 1.5)
    fig, ax = plt.subplots(figsize=(11, height))
    labels = [b[0] for b in bars]
    colors = [{True: "#2e7d32", False: "#c62828", None: "#607d8b"}[b[3]] for b in bars]
    positions = list(range(len(bars)))
    ax.barh(positions, [b[1] for b in bars], color=colors)
    for y, (_, ratio, minimum, _met) in enumerate(bars):
        ax.text(ratio, y, f" {ratio:.2f}x", va="center", fontsize=8)
        if minimum is not None:
            ax.plot([minimum, minimum], [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(
        "throughput / bare baseline (median of paired interleaved rounds); black tick: target"
    )
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
