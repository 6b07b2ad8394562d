"""A leaderboard's CMC plot: the teachers' and every main entry's curve (mean over seeds), as PNG bytes
written without a date or software stamp, so the same runs give the same file."""
from __future__ import annotations

import io

import pandas as pd

from reid_kd.bench.board_runs import of_entry

CMC_RANKS = 20  # ranks drawn in the CMC plot


def plot_name(name: str) -> str:
    """The plot's file name beside <name>.md."""
    return f"{name}_cmc.png"


def cmc_plot(runs: pd.DataFrame, teachers: pd.DataFrame, entries: list[dict], title: str) -> bytes:
    """CMC curves (mean over seeds) of the teacher and every student entry with runs, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    curves = [(f"teacher ({t['backbone']})", np.asarray(t["cmc"], dtype=float), {"color": "black", "linestyle": "--"})
              for _, t in teachers.iterrows() if isinstance(t.get("cmc"), list)]
    students = []
    for entry in entries:
        mine = of_entry(runs, entry["name"])
        if len(mine):
            cmc = np.mean([np.asarray(c, dtype=float) for c in mine["cmc"]], axis=0)
            baseline = entry["method"] == "none"
            students.append((entry["name"], cmc, {"color": "dimgray", "linewidth": 2.5} if baseline else {}))
    # best first, so the legend reads in the order of the curves; tab20 and markers keep 13+ lines apart
    students.sort(key=lambda c: -c[1][:CMC_RANKS].mean())
    markers = "osD^vP*X<>"
    for i, (label, cmc, style) in enumerate(curves + students):
        ranks = np.arange(1, min(CMC_RANKS, len(cmc)) + 1)
        style = {"color": plt.get_cmap("tab20")(i % 20), "marker": markers[i % len(markers)], "linewidth": 1.5,
                 "linestyle": "-"} | style
        ax.plot(ranks, 100 * cmc[:len(ranks)], markersize=3.5, label=label, **style)
    ax.set_xticks([1, *range(5, CMC_RANKS + 1, 5)])
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves or students:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
