"""Leaderboards rebuilt from `runs/`: one markdown file and one CMC plot per benchmark suite.

Everything shown comes from files the runs wrote (runs/<suite>/suite.yaml and each run's
metrics.json, which also carries its teacher's metrics), nothing is measured or dated here, so
rebuilding from the same runs gives the same bytes. A README may carry a suite's table between the
markers `<!-- leaderboard:<suite> -->` and `<!-- /leaderboard:<suite> -->`; the rebuild rewrites that
block too, so no leaderboard number in the README is typed by hand.

The rooms: board_runs.py (which runs count), board_table.py (the tables), board_text.py (the prose),
board_plot.py (the CMC plot), board_summary.py (the suites of a matrix read together: `summary.md` and the
README's `<!-- leaderboard:summary -->` block); this module writes their files and the README blocks. No torch
is imported.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from reid_kd.bench.board_plot import cmc_plot, plot_name
from reid_kd.bench.board_runs import finished, load_runs, suite_record, teachers
from reid_kd.bench.board_summary import SUMMARY, load_setting, read_matrix, summary_page
from reid_kd.bench.board_table import main_entries
from reid_kd.bench.board_text import markdown
from reid_kd.utils.io import write_bytes, write_text

logger = logging.getLogger(__name__)


def build_leaderboard(suite_dir: Path, out_dir: Path, only: list[str] | None = None,
                      name: str | None = None, section: str = "") -> tuple[Path, Path, str, list[str]]:
    """Write <out_dir>/<name>.md and <out_dir>/<name>_cmc.png from the runs under `suite_dir`.

    `name` defaults to the suite's; `only` keeps those entries (a view of the suite, e.g. one sweep of a
    tuning suite); `section`, markdown its caller adds below the main table (e.g. where a tuned value sits).
    Returns both paths, the summary (seeds, commit, main table) for the README block and the rejected run
    files ("path: why").
    """
    suite_text = (suite_dir / "suite.yaml").read_text()
    suite = suite_record(suite_dir / "suite.yaml", suite_text)
    if only is not None:
        suite["methods"] = [e for e in suite["methods"] if e["name"] in only]
    name = name or suite["name"]
    every, rejected = load_runs(suite_dir, suite)
    text, summary = markdown(name, suite_dir.name, suite, suite_text, every, rejected, section)
    md = write_text(text, out_dir / f"{name}.md")
    runs = finished(every)
    png = write_bytes(cmc_plot(runs, teachers(runs), main_entries(suite["methods"]), f"CMC: {name}"),
                      out_dir / plot_name(name))
    return md, png, summary, rejected


def embed_in_readme(readme: Path, name: str, summary: str, md: Path, png: Path) -> bool:
    """Rewrite the suite's marked block in `readme` with its table and CMC plot; False if it has no block."""
    md_rel, png_rel = (relative(p, readme) for p in (md, png))
    return replace_block(readme, name, f"{summary}\n\nThe full leaderboard, with its ablation tables and the suite as "
                                       f"run: [{md_rel}]({md_rel}).\n\n![CMC curves of {name}]({png_rel})")


def relative(path: Path, readme: Path) -> str:
    """`path` as a link from `readme`."""
    return Path(os.path.relpath(path, readme.parent)).as_posix()


def replace_block(readme: Path, name: str, body: str) -> bool:
    """Rewrite what stands between `<!-- leaderboard:<name> -->` and `<!-- /leaderboard:<name> -->` in `readme`
    with `body`; False (nothing written) if it has no such block."""
    start, end = f"<!-- leaderboard:{name} -->", f"<!-- /leaderboard:{name} -->"
    text = readme.read_text()
    if start not in text or end not in text.split(start, 1)[1]:
        return False
    head, rest = text.split(start, 1)
    write_text(f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}", readme)
    return True


def build_summary(runs_dir: Path, out_dir: Path, matrix: Path) -> tuple[Path, str] | None:
    """Write <out_dir>/summary.md from the runs of the suites `matrix` names, when two or more of them have runs;
    returns it and the README block's body (None when fewer were run)."""
    names = read_matrix(matrix)
    found = [n for n in names if (runs_dir / n / "suite.yaml").is_file()]
    if len(found) < 2:
        return None
    page, block = summary_page([load_setting(runs_dir / n) for n in found], matrix.name,
                               [n for n in names if n not in found])
    md = write_text(page, out_dir / f"{SUMMARY}.md")
    return md, block


def rebuild_all(runs_dir: str | Path = "runs", out_dir: str | Path = "leaderboards",
                readme: str | Path | None = None, matrix: str | Path | None = None) -> list[Path]:
    """Rebuild the leaderboard of every suite found under `runs_dir` (and its README block, if any), and the
    cross-setting summary of the suites a `matrix` file names (and its README block), when it exists.

    Returns the files written; logs every rejected run file, by path and why.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    readme = Path(readme) if readme is not None and Path(readme).is_file() else None
    written = []
    for suite_yaml in sorted(runs_dir.glob("*/suite.yaml")):
        md, png, summary, rejected = build_leaderboard(suite_yaml.parent, out_dir)
        for item in rejected:
            logger.info(f"rejected {runs_dir / item}")
        written.append(md)
        if readme and embed_in_readme(readme, suite_yaml.parent.name, summary, md, png):
            written.append(readme)
    across = build_summary(runs_dir, out_dir, Path(matrix)) if matrix is not None and Path(matrix).is_file() else None
    if across is not None:
        md, block = across
        written.append(md)
        if readme and replace_block(readme, SUMMARY, f"{block}\n\nThe settings and the method: "
                                                     f"[{relative(md, readme)}]({relative(md, readme)})."):
            written.append(readme)
    return written
