"""lielib.book.ood: images of each set, the OOD and size summaries, and the committed table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lielib.book import ood
from lielib.book.data import DatasetNotFoundError, resolve_config
from lielib.book.paths import ROOT

TABLE = ROOT / "results" / "real_models" / "lee.csv"


def _long(values: dict[tuple[str, str], np.ndarray], params: dict[str, int]) -> pd.DataFrame:
    """A per-image table in lee.csv's layout from ``(model, set) -> translate_x values``."""
    rows = []
    for (model, set_name), vals in values.items():
        for i, v in enumerate(vals):
            image = f"{set_name}:{i}"
            for action, value in (("translate_x", v), ("translate_y", v), ("rotate", 2 * v)):
                rows.append({"model": model, "arch": model, "params": params[model], "top1": 70.0,
                             "resolution": 224, "set": set_name,
                             "distribution": "in" if set_name == ood.IN_DISTRIBUTION else "out",
                             "image": image, "confidence": 0.5, "metric": "lee", "action": action,
                             "value": value, "se": np.nan})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_ood_images_use_the_models_data_config(name: str) -> None:
    config = resolve_config({"input_size": (3, 240, 240), "interpolation": "bicubic",
                             "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.882})
    try:
        x, ids = ood.load_set(name, 3, config, seed=1)
    except DatasetNotFoundError as err:
        pytest.skip(str(err))
    assert x.shape == (3, 3, 240, 240) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey to RGB
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.1
    _, ids_again = ood.load_set(name, 2, config, seed=1)
    assert set(ids_again) <= set(ids) and all(i.startswith(f"{name}:test:") for i in ids)


def test_ratio_unpaired_known_answer_and_coverage() -> None:
    rng = np.random.default_rng(0)
    b = rng.lognormal(0, 0.3, 200)
    a = 3 * rng.lognormal(0, 0.3, 150)
    r = ood.ratio_unpaired(a, b)
    assert r["ratio"] == pytest.approx(a.mean() / b.mean())
    assert r["lo"] < 3 < r["hi"] and r["n_a"] == 150 and r["n_b"] == 200


def test_ood_gap_and_size_table_on_a_known_table() -> None:
    base = np.linspace(1.0, 2.0, 20)
    table = _long({("small", "photos"): base, ("small", "mnist"): 0.5 * base,
                   ("big", "photos"): 0.8 * base, ("big", "mnist"): 2 * base,
                   ("mid", "photos"): 0.9 * base, ("mid", "mnist"): base},
                  {"small": 10, "mid": 20, "big": 30})
    gap = ood.ood_gap(table).set_index(["model", "action"])
    assert gap.loc[("small", "translate"), "ratio"] == pytest.approx(0.5)
    assert gap.loc[("big", "translate"), "ratio"] == pytest.approx(2.5)
    assert gap.loc[("big", "rotate"), "ratio_lo"] > 1 > gap.loc[("small", "rotate"), "ratio_hi"]
    size = ood.size_table(table).set_index(["model", "action"])
    assert size.loc[("small", "translate"), "ratio_to_smallest"] == 1.0
    assert size.loc[("big", "translate"), "ratio_to_smallest"] == pytest.approx(0.8)
    assert size.loc[("big", "translate"), "ratio_hi"] == pytest.approx(0.8)  # paired: exact
    assert size.loc[("big", "translate"), "spearman_params"] == pytest.approx(-1.0)
    assert (size.n == 20).all()


def test_committed_table_has_metadata_and_enough_images() -> None:
    frame = pd.read_csv(TABLE)
    meta = json.loads(TABLE.with_name("lee.meta.json").read_text())
    assert meta["command"].startswith("python -m lielib.book.ood") and meta["seed"] == 0
    assert set(frame.model) == set(ood.TIMM_TOP1) and set(frame.metric) == set(ood.METRICS)
    rho = frame[frame.metric == "sensitivity_ratio"]
    assert rho.se.notna().all() and frame[frame.metric == "lee"].se.isna().all()
    assert meta["metrics"] == list(ood.METRICS) and meta["references"] == 8
    counts = frame.groupby(["model", "set", "metric", "action"]).image.nunique()
    assert counts.min() >= 20 and set(frame.set) == {ood.IN_DISTRIBUTION, *ood.OUT_OF_DISTRIBUTION}
    photos = frame[frame.set == ood.IN_DISTRIBUTION].groupby("model").image.apply(frozenset)
    assert photos.nunique() == 1, "every model must see the same photos"
    assert (frame.value >= 0).all() and frame.confidence.between(0, 1).all()
    both = frame.pivot_table(index=["model", "set", "image", "action"], columns="metric",
                             values="confidence")
    assert (both["lee"] == both["sensitivity_ratio"]).all()  # one pass, one confidence


@pytest.mark.slow
def test_measure_model_matches_lee_on_the_same_images() -> None:
    from lielib import lee
    from lielib.book.models import WeightsUnavailableError, load_model

    name = "tf_efficientnet_lite0.in1k"
    try:
        frame, info = ood.measure_model(name, n=2, sets=("mnist",), actions=("translate_x",))
    except (WeightsUnavailableError, DatasetNotFoundError) as err:
        pytest.skip(str(err))
    model, minfo = load_model(name)
    x, ids = ood.load_set("mnist", 2, minfo)
    expected = lee(model, x, ["translate_x"], stencil="paper")["translate_x"].to_numpy()
    lee_rows = frame[frame.metric == "lee"]
    assert list(lee_rows.image) == ids and info["full_name"] == name
    np.testing.assert_allclose(lee_rows.value.to_numpy(), expected, rtol=1e-5)
    rho = frame[frame.metric == "sensitivity_ratio"]
    assert list(rho.image) == ids and (rho.value > 0).all() and (rho.se > 0).all()
