"""The cross-setting summary, on hand-made run folders: each setting's Δ is its leaderboard's, Kendall's τ is
checked by hand (and against scipy), a claim holds across settings only when it holds in each."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from helpers import assert_one_line, cli, run_record
from reid_kd.bench.leaderboard import rebuild_all
from reid_kd.bench.stats import agreement, kendall_tau

# mAP per seed: the baseline's, then each entry's paired difference from it (seeds 0, 1, 2)
BASE_A, BASE_B = [0.40, 0.41, 0.42], [0.30, 0.35, 0.32]
SETTING_A = {"a": [0.10] * 3, "b": [0.05] * 3, "c": [0.02] * 3}  # order a > b > c > baseline
SETTING_B = {"a": [0.08] * 3, "b": [0.03, -0.03, 0.02], "c": [0.04] * 3}  # a > c > b > baseline; b's interval holds 0


def write_suite(runs: Path, name: str, base: list[float], deltas: dict[str, list[float]]) -> None:
    """A suite's stored runs as `reidkd bench` leaves them: its record, its expected runs, each run's metrics.json."""
    maps = {"baseline": base} | {e: [b + d for b, d in zip(base, ds)] for e, ds in deltas.items()}
    seeds = list(range(len(base)))
    methods = [{"name": e, "method": "none" if e == "baseline" else "kd"} for e in maps]
    (runs / name).mkdir(parents=True)
    (runs / name / "suite.yaml").write_text(yaml.safe_dump({"name": name, "seeds": seeds, "methods": methods}))
    expected = {}
    for entry, values in maps.items():
        method = "baseline" if entry == "baseline" else "kd"
        for seed in seeds:
            expected[f"{entry}/seed{seed}"] = {"method": method, "run_name": entry, "seed": seed, "config_hash": "h"}
            (runs / name / entry / f"seed{seed}").mkdir(parents=True)
            (runs / name / entry / f"seed{seed}" / "metrics.json").write_text(
                json.dumps(run_record(method, entry, seed, "h", values[seed])))
    (runs / name / "expected_runs.json").write_text(json.dumps(expected))


def rows(md: str, first: str) -> dict[str, list[str]]:
    """The cells of the markdown table whose header starts with `first`, by its first cell."""
    table = md.split(f"| {first}", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table)}


@pytest.fixture
def matrix(tmp_path):
    write_suite(tmp_path / "runs", "A", BASE_A, SETTING_A)
    write_suite(tmp_path / "runs", "B", BASE_B, SETTING_B)
    (tmp_path / "matrix.yaml").write_text("matrix: [A, B, C]\n")
    (tmp_path / "README.md").write_text("intro\n<!-- leaderboard:summary -->\nstale text\n<!-- /leaderboard:summary -->\nend\n")
    written = rebuild_all(tmp_path / "runs", tmp_path / "lb", tmp_path / "README.md", tmp_path / "matrix.yaml")
    assert tmp_path / "lb" / "summary.md" in written and tmp_path / "README.md" in written
    return tmp_path


def test_each_settings_delta_and_interval_is_its_leaderboards(matrix):
    summary = rows((matrix / "lb" / "summary.md").read_text(), "Method")
    for setting, column in (("A", 0), ("B", 1)):
        board = rows((matrix / "lb" / f"{setting}.md").read_text(), "Method")
        for entry in ("a", "b", "c"):
            assert summary[entry][column] == board[entry][6], (setting, entry)  # its Δ mAP (95% CI)
    # b in B: differences 3, -3, 2 points, mean 0.67, sd 3.215, half-width 4.303 * 3.215 / sqrt(3) = 7.99
    assert summary["b"][1] == "+0.67 [-7.32, +8.65]" and summary["c"][1].endswith("*")
    assert list(summary) == ["a", "b", "c", "baseline"]  # by mean rank, ties by name
    assert [summary[e][2] for e in summary] == ["1.00", "2.50", "2.50", "4.00"]  # A: a b c base; B: a c b base


def test_kendalls_tau_by_hand_with_an_interval_from_resampling_seeds(matrix):
    page = (matrix / "lb" / "summary.md").read_text()
    # 4 entries, 6 pairs, one discordant (b, c): τ = (5 - 1) / 6. Only B's b varies by seed: a draw of its seeds
    # whose mean Δ is below 0 (2 or 3 of the -0.03 seed: 7/27 of draws) swaps b and the baseline too, τ = 2/6
    assert rows(page, "Settings")["A vs B"] == ["4", "+0.67 [+0.33, +0.67]"]
    assert "bootstrap" in page and "resampling every setting's seeds with replacement" in page
    assert "Not run yet: `C`" in page and "[A](A.md)" in page
    again = rebuild_all(matrix / "runs", matrix / "lb2", None, matrix / "matrix.yaml")
    assert (matrix / "lb2" / "summary.md").read_bytes() == page.encode() and matrix / "lb2" / "summary.md" in again


def test_a_claim_is_listed_as_general_only_when_it_holds_in_every_setting(matrix):
    page = (matrix / "lb" / "summary.md").read_text()
    assert "- Above the baseline in every setting: `a`, `c`." in page  # b's interval in B holds 0
    assert "- `b`: above in A; no claim in B." in page
    block = (matrix / "README.md").read_text()
    assert block.startswith("intro\n<!-- leaderboard:summary -->\nΔ mAP against") and "stale text" not in block
    assert block.endswith("[lb/summary.md](lb/summary.md).\n<!-- /leaderboard:summary -->\nend\n")
    assert "- Above the baseline in every setting: `a`, `c`." in block


def test_the_summary_waits_for_two_suites_of_the_matrix(tmp_path):
    write_suite(tmp_path / "runs", "A", BASE_A, SETTING_A)
    write_suite(tmp_path / "runs", "other", BASE_B, SETTING_B)
    (tmp_path / "matrix.yaml").write_text("matrix: [A, B]\n")
    written = rebuild_all(tmp_path / "runs", tmp_path / "lb", None, tmp_path / "matrix.yaml")
    assert len(written) == 2 and not (tmp_path / "lb" / "summary.md").exists()


@pytest.mark.parametrize("text, words", [("- A\n- B\n", ["matrix: [suite"]), ("matrix: A\n", ["matrix: [suite"]),
                                         ("suites: [A, B]\n", ["matrix: [suite"]), ("matrix: [A, A]\n", ["A more than once"])])
def test_a_matrix_file_that_is_not_one_is_one_line(tmp_path, text, words):
    write_suite(tmp_path / "runs", "A", BASE_A, SETTING_A)
    (tmp_path / "matrix.yaml").write_text(text)
    assert_one_line(cli("leaderboard", "--runs", tmp_path / "runs", "--out", tmp_path / "lb", "--readme",
                        tmp_path / "none.md", "--matrix", tmp_path / "matrix.yaml"), "matrix.yaml", *words)


def test_kendall_tau_is_scipys_tau_b_row_by_row_ties_included():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (50, 7)).astype(float), rng.integers(0, 4, (50, 7)).astype(float)  # many ties
    assert np.allclose(kendall_tau(a, b), [stats.kendalltau(x, y).statistic for x, y in zip(a, b)])
    assert np.isnan(kendall_tau(np.ones(4), np.arange(4.0)))
    noisy = agreement(rng.normal(size=(4, 6)) + np.arange(6), rng.normal(size=(5, 6)) + np.arange(6), 1, 2)
    assert noisy.low <= noisy.tau <= noisy.high and noisy.low < noisy.high
