"""The book's statistics: known answers, interval coverage, sign stability, nested F test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lielib.book import stats


def test_trend_recovers_a_known_line_on_both_axes() -> None:
    x = np.linspace(0.5, 0.9, 20)
    out = stats.trend(x, 2 * x + 1)
    assert out["slope"] == pytest.approx(2) and out["intercept"] == pytest.approx(1)
    assert out["r2"] == pytest.approx(1) and out["spearman"] == pytest.approx(1)
    assert out["slope_lo"] == pytest.approx(2) and out["slope_hi"] == pytest.approx(2)
    logged = stats.trend(x, 10 ** (-3 * x), log_y=True)
    assert logged["slope"] == pytest.approx(-3) and logged["axis"] == "log10"
    assert logged["spearman"] == pytest.approx(-1)


def test_trend_interval_covers_the_truth_and_drops_bad_points() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 60)
    y = -1.5 * x + rng.normal(0, 0.3, 60)
    out = stats.trend(np.append(x, np.nan), np.append(y, 1.0), seed=1)
    assert out["n"] == 60
    assert out["slope_lo"] < -1.5 < out["slope_hi"] and out["slope_hi"] < 0
    assert 0 < out["r2_lo"] < out["r2"] < out["r2_hi"] <= 1
    assert stats.trend(x, y, seed=1) == stats.trend(x, y, seed=1)  # seeded
    with pytest.raises(ValueError, match="at least 3"):
        stats.trend([1, 2], [1, 2])


def test_leave_one_out_finds_the_point_that_makes_the_sign() -> None:
    frame = pd.DataFrame({"acc": [0.8, 0.82, 0.84, 0.86, 0.88, 0.3],
                          "lee": [1.0, 1.1, 1.2, 1.3, 1.4, 9.0],
                          "family": ["a", "a", "b", "b", "b", "c"]})
    assert stats.trend(frame["acc"], frame["lee"])["slope"] < 0
    by_model = stats.leave_one_out(frame, "acc", "lee")
    assert by_model.set_index("left_out").loc[5, "slope"] > 0
    assert not by_model["same_sign"].all()
    by_family = stats.leave_one_out(frame, "acc", "lee", by="family")
    assert by_family.set_index("left_out").loc["c", "same_sign"] == False


def test_group_adds_detects_an_offset_between_groups() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 40)
    g = np.repeat(["cnn", "vit"], 20)
    y = x + np.where(g == "vit", 2.0, 0.0) + rng.normal(0, 0.1, 40)
    frame = pd.DataFrame({"x": x, "y": y, "g": g})
    out = stats.group_adds(frame, "x", "y", "g")
    assert out["p"] < 1e-6 and out["r2_x_group"] > out["r2_x"] and out["df_added"] == 1
    null = stats.group_adds(frame.assign(y=x + rng.normal(0, 0.1, 40)), "x", "y", "g")
    assert null["p"] > 1e-3


def test_mean_and_ratio_intervals() -> None:
    rng = np.random.default_rng(0)
    a = rng.exponential(1.0, 200)
    m = stats.mean_ci(a)
    assert m["lo"] < m["mean"] < m["hi"] and m["n"] == 200
    r = stats.ratio_ci(2 * a, a)
    assert r["ratio"] == pytest.approx(2) and r["lo"] == pytest.approx(2) == r["hi"]
    noisy = stats.ratio_ci(a * rng.uniform(0.5, 1.5, 200), a)
    assert noisy["lo"] < 1 < noisy["hi"]
    with pytest.raises(ValueError, match="no finite"):
        stats.mean_ci([np.nan])
