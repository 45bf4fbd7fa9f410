"""Render PNG previews of the dashboards from a live Prometheus, laid out as Grafana lays them
out: `python -m dashboards.preview --prometheus http://127.0.0.1:9090` (dashboards/previews/)."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dashboards.promql import DEFAULT_VARIABLES, expand, legend

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "dashboards" / "previews"
GRID_COLUMNS = 24
# Grafana's grid: 24 columns; a height unit is ~30 px. Previews are drawn at 1/2.5 of that.
INCH_PER_ROW = 0.32
FIGURE_WIDTH_IN = 12.0
DPI = 64

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
PALETTE = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a")


@dataclass
class Series:
    """One returned time series: its legend and (timestamp, value) points."""

    name: str
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def format_value(value: float, unit: str) -> str:
    """A value as Grafana would print it for the common units Storefront's panels use."""
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "bytes":
        for suffix, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "currencyUSD":
        return f"${value:,.2f}"
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k{suffix}"
    return f"{value:.3g}{suffix}" if value != int(value) else f"{int(value)}{suffix}"


def layout(dashboard: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The drawable panels (rows included, flattened) and the grid's height in rows."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    height = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels), default=1)
    return panels, height


def query_range(
    prometheus: str, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    """Prometheus /api/v1/query_range; the matrix result."""
    response = httpx.get(
        f"{prometheus.rstrip('/')}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    )
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def fetch(
    prometheus: str,
    dashboard: Mapping[str, Any],
    start: float,
    end: float,
    step: float,
    variables: Mapping[str, str] = DEFAULT_VARIABLES,
) -> dict[int, list[Series]]:
    """Every panel's series (by panel id) for the time range, queried as Grafana would."""
    data: dict[int, list[Series]] = {}
    panels, _ = layout(dashboard)
    for panel in panels:
        series: list[Series] = []
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue
            for item in query_range(
                prometheus, expand(target["expr"], variables), start, end, step
            ):
                name = legend(target.get("legendFormat", ""), item["metric"])
                points = [(float(t), float(v)) for t, v in item["values"]]
                series.append(Series(name, [t for t, _ in points], [v for _, v in points]))
        data[panel["id"]] = series
    return data


def render(dashboard: Mapping[str, Any], data: Mapping[int, Sequence[Series]], path: Path) -> Path:
    """Draw the dashboard's panels with `data` into a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    panels, grid_height = layout(dashboard)
    title_rows = 1.5
    total = grid_height + title_rows
    figure = plt.figure(
        figsize=(FIGURE_WIDTH_IN, total * INCH_PER_ROW), dpi=DPI, facecolor=BACKGROUND
    )
    figure.patch.set_facecolor(BACKGROUND)
    figure.text(
        0.01,
        1 - 0.6 / total,
        dashboard.get("title", ""),
        color=TEXT,
        fontsize=15,
        weight="bold",
        va="center",
    )
    fig_w, fig_h = FIGURE_WIDTH_IN, total * INCH_PER_ROW
    gap = 0.04  # inches between panels
    for panel in panels:
        pos = panel["gridPos"]
        # The panel's box in inches from the bottom-left corner, then as figure fractions.
        x0 = pos["x"] / GRID_COLUMNS * fig_w + gap
        x1 = (pos["x"] + pos["w"]) / GRID_COLUMNS * fig_w - gap
        y1 = fig_h - (title_rows + pos["y"]) * INCH_PER_ROW - gap
        y0 = fig_h - (title_rows + pos["y"] + pos["h"]) * INCH_PER_ROW + gap
        if panel.get("type") == "row":
            figure.text(
                x0 / fig_w,
                (y0 + y1) / 2 / fig_h,
                panel.get("title", ""),
                color=TEXT,
                fontsize=11,
                weight="bold",
                va="center",
            )
            continue
        # Behind the axes (zorder < 0), or the panel box would hide what is drawn in it.
        figure.add_artist(
            Rectangle(
                (x0 / fig_w, y0 / fig_h),
                (x1 - x0) / fig_w,
                (y1 - y0) / fig_h,
                transform=figure.transFigure,
                facecolor=PANEL,
                edgecolor="#2c3235",
                linewidth=0.6,
                zorder=-1,
            )
        )
        figure.text(
            (x0 + 0.08) / fig_w,
            (y1 - 0.12) / fig_h,
            panel.get("title", ""),
            color=TEXT,
            fontsize=8,
            va="center",
        )
        # Room inside the box for the title (top) and the tick labels (left, bottom).
        left, bottom, top, right = (0.62, 0.3, 0.26, 0.12)
        if panel.get("type") == "stat":
            left, bottom, right = 0.08, 0.08, 0.08
        rect = (
            (x0 + left) / fig_w,
            (y0 + bottom) / fig_h,
            (x1 - x0 - left - right) / fig_w,
            (y1 - y0 - top - bottom) / fig_h,
        )
        axes = figure.add_axes(rect, facecolor=PANEL)
        _draw_panel(axes, panel, data.get(panel["id"], []))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, facecolor=BACKGROUND, dpi=DPI)
    plt.close(figure)
    _shrink(path)
    return path


def _shrink(path: Path, colours: int = 96) -> None:
    """Rewrite the PNG with a small palette: previews are committed, so size matters."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def drawn_pixels(path: Path) -> int:
    """How many pixels of the PNG are coloured (series, fills, stat values) rather than the
    greys of backgrounds, grid and text: proof that data was drawn."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    return int((saturation > 60).sum())


def _draw_panel(axes: Any, panel: Mapping[str, Any], series: Sequence[Series]) -> None:
    from matplotlib.ticker import FuncFormatter

    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.tick_params(colors=MUTED, labelsize=6, length=2)
    finite = [s for s in series if any(not math.isnan(v) for v in s.values)]
    if not finite:
        axes.set_xticks([])
        axes.set_yticks([])
        axes.text(
            0.5,
            0.45,
            "No data",
            color=MUTED,
            ha="center",
            va="center",
            transform=axes.transAxes,
            fontsize=9,
        )
        return
    if panel.get("type") == "stat":
        axes.set_xticks([])
        axes.set_yticks([])
        first = finite[0]
        last = next(v for v in reversed(first.values) if not math.isnan(v))
        axes.fill_between(first.times, first.values, color=PALETTE[0], alpha=0.15)
        axes.text(
            0.5,
            0.42,
            format_value(last, unit),
            color=PALETTE[0],
            ha="center",
            va="center",
            transform=axes.transAxes,
            fontsize=16,
            weight="bold",
        )
        return
    start = min(s.times[0] for s in finite)
    for index, item in enumerate(finite[:8]):
        minutes = [(t - start) / 60 for t in item.times]
        axes.plot(
            minutes,
            item.values,
            marker="o" if len(minutes) < 3 else None,
            markersize=2,
            color=PALETTE[index % len(PALETTE)],
            linewidth=1,
            label=item.name[:40],
        )
    axes.set_ylim(bottom=0)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, unit)))
    axes.set_xlabel("minutes", color=MUTED, fontsize=6, labelpad=1)
    axes.grid(color="#2c3235", linewidth=0.5)
    axes.legend(loc="upper left", fontsize=5, frameon=False, labelcolor=TEXT, ncol=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.preview", description=__doc__)
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Output directory")
    parser.add_argument("--minutes", type=float, default=15, help="Time range, in minutes")
    parser.add_argument("--step", type=float, default=5, help="Query resolution, in seconds")
    parser.add_argument(
        "--rate-interval", default="1m", help="Value of $__rate_interval (default 1m)"
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="A dashboard variable's value (e.g. job=storefront); default: All (.*)",
    )
    args = parser.parse_args(argv)
    end = time.time()
    start = end - args.minutes * 60
    variables = {
        **DEFAULT_VARIABLES,
        "__rate_interval": args.rate_interval,
        "__range": f"{int(args.minutes * 60)}s",
        **dict(v.split("=", 1) for v in args.var),
    }
    for path in sorted((REPO_ROOT / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        data = fetch(args.prometheus, dashboard, start, end, args.step, variables)
        out = render(dashboard, data, args.out / f"{path.stem}.png")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
