"""The retrieval evaluation as a picture: nDCG@10 per dataset and mode, and query latency per mode.

Drawn with matplotlib's object API on a bare ``Figure`` (the Agg canvas), so no GUI backend or global pyplot
state is involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

_WIDTH = 0.8  # of each group of bars


def plot_retrieval(reports: Sequence[dict[str, Any]], path: Path) -> None:
    """Write a PNG of ``ragserve eval`` reports (one per dataset): grouped bars of nDCG@10 per dataset and mode,
    and per mode a bar of each dataset's median query latency with a whisker up to its p95."""
    from matplotlib.figure import Figure

    modes = list(dict.fromkeys(mode for r in reports for mode in r["modes"]))
    names = [str(r["dataset"]) for r in reports]
    figure = Figure(figsize=(6 + 1.5 * len(reports), 4.5), layout="constrained")
    quality, latency = figure.subplots(1, 2, width_ratios=[max(len(reports), 1), max(len(modes), 1) * 0.8])

    bar = _WIDTH / max(len(modes), 1)
    for m, mode in enumerate(modes):
        xs = [d + (m - (len(modes) - 1) / 2) * bar for d in range(len(reports))]
        values = [r["modes"].get(mode, {}).get("ndcg@10", 0.0) for r in reports]
        bars = quality.bar(xs, values, bar, label=mode)
        quality.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    quality.set_xticks(range(len(reports)), names)
    quality.set_ylim(0, 1.08)  # room for the value labels of perfect scores
    quality.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    quality.set_ylabel("nDCG@10")
    quality.set_title("Retrieval quality")
    quality.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=max(len(modes), 1))

    bar = _WIDTH / max(len(reports), 1)
    for d, r in enumerate(reports):
        xs = [m + (d - (len(reports) - 1) / 2) * bar for m in range(len(modes))]
        p50 = [r["modes"].get(mode, {}).get("latency_ms_p50", 0.0) for mode in modes]
        p95 = [r["modes"].get(mode, {}).get("latency_ms_p95", 0.0) for mode in modes]
        whiskers = [[0.0] * len(modes), [max(high - low, 0.0) for low, high in zip(p50, p95, strict=True)]]
        latency.bar(xs, p50, bar, yerr=whiskers, capsize=3, label=r["dataset"])
    latency.set_xticks(range(len(modes)), modes)
    latency.set_ylabel("ms per query")
    latency.set_title("Query latency: p50 (bar) to p95 (whisker)")
    latency.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=max(len(reports), 1))
    figure.savefig(path, format="png", dpi=120)
