"""Paired Δ and its Student-t interval against a hand-computed example."""
import math

import pytest

from reid_kd.bench.stats import format_delta, paired_delta, seeds_needed

T_975_2DF = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def test_paired_delta_matches_the_hand_computed_interval():
    # per-seed differences 0.02, 0.01, 0.03: mean 0.02, sd 0.01, half-width t * 0.01 / sqrt(3)
    delta = paired_delta({0: 0.30, 1: 0.25, 2: 0.28, 7: 0.9}, {0: 0.28, 1: 0.24, 2: 0.25})
    half = T_975_2DF * 0.01 / math.sqrt(3)
    assert delta.seeds == 3 and delta.mean == pytest.approx(0.02)
    assert (delta.low, delta.high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert not delta.excludes_zero and format_delta(delta) == "+2.00 [-0.48, +4.48]"


def test_an_interval_above_zero_is_marked():
    delta = paired_delta({0: 0.35, 1: 0.30, 2: 0.29}, {0: 0.30, 1: 0.24, 2: 0.25})  # 0.05, 0.06, 0.04
    assert delta.excludes_zero and format_delta(delta) == "+5.00 [+2.52, +7.48] *"


def test_pairing_removes_the_seed_effect_that_an_unpaired_spread_keeps():
    base = {0: 0.134, 1: 0.063, 2: 0.137}  # a slow seed drags every method alike
    method = {s: v + 0.01 for s, v in base.items()}
    assert paired_delta(method, base).excludes_zero


def test_one_shared_seed_gives_no_interval_and_none_gives_nothing():
    assert format_delta(paired_delta({0: 0.5, 1: 0.4}, {0: 0.45})) == "+5.00"
    assert paired_delta({1: 0.5}, {0: 0.45}) is None and format_delta(None) == "—"


def test_the_paired_sd_and_the_seeds_an_interval_of_a_given_width_needs():
    delta = paired_delta({0: 0.30, 1: 0.25, 2: 0.28}, {0: 0.28, 1: 0.24, 2: 0.25})  # sd 0.01
    assert delta.sd == pytest.approx(0.01)
    # t(n-1) * 0.01 / sqrt(n) <= 0.02: n=3 gives 4.303/1.732 = 2.48 > 2, n=4 gives 3.182/2 = 1.59 <= 2
    assert seeds_needed(0.01, 0.02) == 4
    assert seeds_needed(math.nan, 0.02) is None and seeds_needed(1.0, 1e-6) is None
