"""Seed statistics, paired differences to softmax and verdicts, on hand-made numbers."""

from __future__ import annotations

import math

import pytest

from reid_ir.reports.tables import (
    VERDICT_RULE,
    format_statistics_markdown,
    mean_std,
    paired_verdict,
    seed_statistics,
    t_critical,
)

SOFTMAX = {1: 30.0, 2: 34.0, 3: 32.0}
#: method -> rank-1 per seed; the paired differences to SOFTMAX are in the comments.
METHODS = {
    "softmax": SOFTMAX,
    "steady_gain": {1: 33.0, 2: 38.0, 3: 34.0},  # +3 +4 +2: mean 3, sd 1
    "noisy": {1: 31.0, 2: 30.0, 3: 36.0},  # +1 -4 +4: mean 1/3
    "steady_loss": {1: 25.0, 2: 30.0, 3: 27.0},  # -5 -4 -5
    "one_seed": {1: 40.0},  # +10, one pair
    "two_se_only": {1: 32.0, 2: 37.0, 3: 39.0},  # +2 +3 +7: mean 4 > 2 x se (3.06), < t x se
    "unpaired": {4: 50.0, 5: 51.0},  # seeds softmax never ran
}


def _rows(split="long_tail_rho50"):
    return [
        {"split": split, "method": m, "seed": s, "rank1": v, "mAP": v / 2}
        for m, seeds in METHODS.items()
        for s, v in seeds.items()
    ]


def test_mean_std_is_the_sample_std():
    mean, std = mean_std([30.0, 34.0, 32.0])
    assert mean == 32.0 and std == pytest.approx(2.0)
    assert mean_std([5.0]) == (5.0, None)
    with pytest.raises(ValueError, match="at least one value"):
        mean_std([])


def test_t_critical_matches_the_t_table():
    assert t_critical(3) == pytest.approx(4.303, abs=1e-3)
    assert t_critical(2) == pytest.approx(12.706, abs=1e-3)
    with pytest.raises(ValueError, match="n >= 2"):
        t_critical(1)


@pytest.mark.parametrize(
    ("diffs", "verdict"),
    [
        ([3.0, 4.0, 2.0], "better"),
        ([1.0, -4.0, 4.0], "no evidence"),
        ([-5.0, -4.0, -5.0], "worse"),
        ([10.0], "no evidence"),
        ([], "no evidence"),
        ([2.0, 3.0, 7.0], "no evidence"),
        ([0.0, 0.0, 0.0], "no evidence"),
    ],
)
def test_paired_verdict_follows_the_stated_rule(diffs, verdict):
    assert paired_verdict(diffs)["verdict"] == verdict


def test_paired_verdict_reports_mean_spread_and_interval():
    v = paired_verdict([3.0, 4.0, 2.0])
    assert (v["n"], v["mean"], v["std"]) == (3, 3.0, pytest.approx(1.0))
    assert v["ci"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert paired_verdict([10.0]) == {
        "n": 1,
        "mean": 10.0,
        "std": None,
        "ci": None,
        "verdict": "no evidence",
    }


def test_seed_statistics_pairs_by_split_and_seed():
    rows = _rows() + _rows("balanced")[:3]  # the other split holds softmax only
    stats = {(s["split"], s["method"]): s for s in seed_statistics(rows)}
    soft = stats["long_tail_rho50", "softmax"]
    assert (soft["seeds"], soft["rank1_mean"], soft["rank1_std"]) == (3, 32.0, pytest.approx(2.0))
    assert soft["verdict_rank1"] == "baseline" and soft["d_rank1_mean"] is None
    gain = stats["long_tail_rho50", "steady_gain"]
    assert (gain["d_rank1_n"], gain["d_rank1_mean"], gain["d_rank1_std"]) == (
        3,
        3.0,
        pytest.approx(1.0),
    )
    assert gain["verdict_rank1"] == "better" and gain["verdict_mAP"] == "better"
    assert gain["d_mAP_mean"] == pytest.approx(1.5)
    assert stats["long_tail_rho50", "noisy"]["verdict_rank1"] == "no evidence"
    assert stats["long_tail_rho50", "steady_loss"]["verdict_mAP"] == "worse"
    assert stats["long_tail_rho50", "one_seed"]["d_rank1_n"] == 1
    assert stats["long_tail_rho50", "two_se_only"]["verdict_rank1"] == "no evidence"
    unpaired = stats["long_tail_rho50", "unpaired"]
    assert unpaired["d_rank1_n"] == 0 and unpaired["verdict_rank1"] == "no evidence"
    assert list(stats)[-1] == ("balanced", "softmax")


def test_seed_statistics_refuses_duplicate_or_incomplete_runs():
    rows = _rows()
    with pytest.raises(ValueError, match="two runs of long_tail_rho50/softmax seed 1"):
        seed_statistics(rows + rows[:1])
    with pytest.raises(ValueError, match=r"misses \['mAP'\]"):
        seed_statistics([{"split": "s", "method": "softmax", "seed": 1, "rank1": 3.0}])


def test_markdown_states_the_rule_and_shows_mean_std_and_differences():
    text = format_statistics_markdown(seed_statistics(_rows()), extra=[("cell (min)", "cell")])
    assert VERDICT_RULE.format(baseline="softmax") in text
    lines = text.splitlines()
    assert lines[2].startswith(
        "| split | method | seeds | rank-1 | mAP | Δ rank-1 | rank-1 verdict |"
    )
    assert "| long_tail_rho50 | softmax | 3 | 32.0 ± 2.0 | 16.0 ± 1.0 |  | baseline |" in text
    assert (
        "| steady_gain | 3 | 35.0 ± 2.6 | 17.5 ± 1.3 | +3.0 ± 1.0 (3) | better | +1.5 ± 0.5 (3) | better |"
        in text
    )
    assert "| one_seed | 1 | 40.0 | 20.0 | +10.0 (1) | no evidence |" in text
    assert "no finished runs yet" in format_statistics_markdown([])
