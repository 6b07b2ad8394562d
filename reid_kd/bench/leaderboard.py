"""Leaderboards rebuilt from `runs/`: one markdown file and one CMC plot per benchmark suite.

Everything shown comes from files the runs wrote (runs/<suite>/suite.yaml and each run's
metrics.json, which also carries its teacher's metrics), nothing is measured or dated here, so
rebuilding from the same runs gives the same bytes. A README may carry a suite's table between the
markers `<!-- leaderboard:<suite> -->` and `<!-- /leaderboard:<suite> -->`; the rebuild rewrites that
block too, so no leaderboard number in the README is typed by hand.

The rooms: board_runs.py (which runs count), board_table.py (the tables), board_text.py (the prose),
board_plot.py (the CMC plot); this module writes their files and the README block. No torch is imported.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from reid_kd.bench.board_plot import cmc_plot, plot_name
from reid_kd.bench.board_runs import finished, load_runs, suite_record, teachers
from reid_kd.bench.board_table import main_entries
from reid_kd.bench.board_text import markdown
from reid_kd.utils.io import write_bytes, write_text

logger = logging.getLogger(__name__)


def build_leaderboard(suite_dir: Path, out_dir: Path, only: list[str] | None = None,
                      name: str | None = None) -> tuple[Path, Path, str, list[str]]:
    """Write <out_dir>/<name>.md and <out_dir>/<name>_cmc.png from the runs under `suite_dir`.

    `name` defaults to the suite's; `only` keeps those entries (a view of the suite, e.g. one sweep of a
    tuning suite). Returns both paths, the summary (seeds, commit, main table) for the README block and
    the rejected run files ("path: why").
    """
    suite_text = (suite_dir / "suite.yaml").read_text()
    suite = suite_record(suite_dir / "suite.yaml", suite_text)
    if only is not None:
        suite["methods"] = [e for e in suite["methods"] if e["name"] in only]
    name = name or suite["name"]
    every, rejected = load_runs(suite_dir, suite)
    text, summary = markdown(name, suite_dir.name, suite, suite_text, every, rejected)
    md = write_text(text, out_dir / f"{name}.md")
    runs = finished(every)
    png = write_bytes(cmc_plot(runs, teachers(runs), main_entries(suite["methods"]), f"CMC: {name}"),
                      out_dir / plot_name(name))
    return md, png, summary, rejected


def embed_in_readme(readme: Path, name: str, summary: str, md: Path, png: Path) -> bool:
    """Rewrite the suite's marked block in `readme` with its table and CMC plot; False if it has no block."""
    start, end = f"<!-- leaderboard:{name} -->", f"<!-- /leaderboard:{name} -->"
    text = readme.read_text()
    if start not in text or end not in text.split(start, 1)[1]:
        return False
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    md_rel, png_rel = (Path(os.path.relpath(p, readme.parent)).as_posix() for p in (md, png))
    block = (f"{start}\n{summary}\n\nThe full leaderboard, with its ablation tables and the suite as run: "
             f"[{md_rel}]({md_rel}).\n\n![CMC curves of {name}]({png_rel})\n{end}")
    write_text(head + block + tail, readme)
    return True


def rebuild_all(runs_dir: str | Path = "runs", out_dir: str | Path = "leaderboards",
                readme: str | Path | None = None) -> list[Path]:
    """Rebuild the leaderboard of every suite found under `runs_dir` (and its README block, if any).

    Returns the files written; logs every rejected run file, by path and why.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    written = []
    for suite_yaml in sorted(runs_dir.glob("*/suite.yaml")):
        md, png, summary, rejected = build_leaderboard(suite_yaml.parent, out_dir)
        for item in rejected:
            logger.info(f"rejected {runs_dir / item}")
        written.append(md)
        if readme is not None and Path(readme).is_file() and embed_in_readme(Path(readme), suite_yaml.parent.name,
                                                                             summary, md, png):
            written.append(Path(readme))
    return written
