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


def _clustered(rng: np.random.Generator, k: int = 10, per: int = 5, slope: float = -2.0,
               spread: float = 1.0) -> pd.DataFrame:
    """``k`` clusters of ``per`` rows; each cluster shares one offset (its rows move together)."""
    rows = []
    for c in range(k):
        offset = rng.normal(0, spread)
        for j in range(per):
            x = rng.uniform(0, 1)
            rows.append({"cluster": f"c{c}", "seed": j, "x": x,
                         "y": slope * x + offset + rng.normal(0, 0.05)})
    return pd.DataFrame(rows)


def test_cluster_interval_is_wider_than_the_naive_one_when_clusters_move_together() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"cluster": np.repeat([f"c{i}" for i in range(8)], 6)})
    frame["v"] = np.repeat(rng.normal(0, 1, 8), 6)  # perfectly correlated within a cluster
    naive = stats.mean_ci(frame["v"])
    values = frame["v"].to_numpy()
    clustered = stats.cluster_bootstrap(frame, lambda r: values[r].mean(), "cluster")
    assert clustered["estimate"] == pytest.approx(naive["mean"])
    assert clustered["hi"] - clustered["lo"] > 1.8 * (naive["hi"] - naive["lo"])
    assert clustered["n_clusters"] == 8 and clustered["n_rows"] == 48
    with pytest.raises(ValueError, match="at least 3 clusters"):
        stats.cluster_bootstrap(frame[frame.cluster.isin(["c0", "c1"])], lambda r: 0.0, "cluster")


def test_cluster_trend_recovers_a_known_slope_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    frame = _clustered(rng, spread=0.0)
    out = stats.cluster_trend(frame, "x", "y", "cluster")
    assert out["slope"] == pytest.approx(-2.0, abs=0.05)
    assert out["slope_lo"] < -2.0 < out["slope_hi"] < 0 and out["n_clusters"] == 10
    assert out == stats.cluster_trend(frame, "x", "y", "cluster")
    fit = stats.trend(frame["x"], frame["y"])  # the same point estimates as the naive fit
    assert out["slope"] == pytest.approx(fit["slope"]) and out["r2"] == pytest.approx(fit["r2"])


def test_hierarchical_bootstrap_counts_seeds_and_widens_with_seed_noise() -> None:
    rng = np.random.default_rng(2)
    frame = _clustered(rng, per=3, spread=0.0)
    out = stats.cluster_trend(frame, "x", "y", "cluster", within="seed")
    assert out["units_min"] == out["units_max"] == 3 and out["unit"] == "cluster/seed"
    assert out["slope_lo"] < -2.0 < out["slope_hi"]
    uneven = frame[~((frame.cluster == "c0") & (frame.seed > 0))]
    assert stats.cluster_trend(uneven, "x", "y", "cluster", within="seed")["units_min"] == 1


def test_mixed_slope_recovers_the_slope_under_cluster_offsets() -> None:
    rng = np.random.default_rng(3)
    frame = _clustered(rng, k=12, per=6, spread=2.0)
    out = stats.mixed_slope(frame, "x", "y", "cluster")
    assert out["lo"] < -2.0 < out["hi"] and out["hi"] - out["lo"] < 0.2
    assert out["icc"] > 0.9 and out["n_groups"] == 12
    naive = stats.trend(frame["x"], frame["y"])  # offsets swamp the pooled fit
    assert naive["slope_hi"] - naive["slope_lo"] > 5 * (out["hi"] - out["lo"])


def test_adjusted_slope_removes_a_confounder() -> None:
    rng = np.random.default_rng(4)
    n = 60
    z = rng.uniform(0, 1, n)  # the confounder drives both x and y
    frame = pd.DataFrame({"z": z, "x": z + rng.normal(0, 0.1, n), "g": np.arange(n) % 10})
    frame["y"] = 3 * frame["z"] + rng.normal(0, 0.05, n)
    out = stats.adjusted_slope(frame, "x", "y", ["z"], "g")
    assert out["unadjusted"] > 2 and out["lo"] < 0 < out["hi"] and out["n_clusters"] == 10
