"""Paired Δ and its Student-t interval against a hand-computed example."""
import math

import pytest

from reid_kd.bench.stats import format_delta, paired_delta

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
