"""The architecture chapter's analysis on synthetic zoo tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lielib.book import architectures as A


def _lee_table(n_models: int = 8, n_images: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_models):
        fam = ("cnn", "vit")[m % 2]
        acc_final = 0.7 + 0.02 * m
        for step, acc in ((0, 0.1), (10, acc_final)):
            scale = 0.5 if step == 0 else 5 * (1 - acc_final)  # LEE falls with final accuracy
            for i in range(n_images):
                v = scale * rng.uniform(0.9, 1.1)
                rows.append({"model": f"m{m}", "family": fam, "kind": fam, "size": "small",
                             "n_train": 60000, "augment": "none", "condition": "60k",
                             "converged": m != 7, "step": step, "final": step == 10,
                             "accuracy": acc, "image": i, "lee_translate_x": v,
                             "lee_translate_y": v, "lee_rotate": v / 2})
    return pd.DataFrame(rows)


def test_per_model_averages_images_and_takes_full_test_accuracy() -> None:
    lee = _lee_table()
    records = pd.DataFrame({"name": [f"m{m}" for m in range(8)], "test_acc": np.linspace(0.5, 0.6, 8)})
    out = A.per_model(lee, records)
    assert len(out) == 16 and (out["n_images"] == 6).all()
    final = out[out["final"]].set_index("model")
    assert final.loc["m3", "accuracy"] == pytest.approx(records.set_index("name").loc["m3", "test_acc"])
    expected = lee[(lee["model"] == "m3") & lee["final"]]["lee_translate_x"].mean()
    assert final.loc["m3", "lee_translate"] == pytest.approx(expected)


def test_trends_use_converged_models_and_find_the_planted_sign() -> None:
    models = A.per_model(_lee_table())
    final = models[models["final"]]
    fits = A.trends(final, ["lee_translate", "lee_rotate"], n_resamples=200)
    assert set(fits["axis"]) == {"linear", "log10"} and (fits["n"] == 7).all()
    assert (fits["slope"] < 0).all() and (fits["spearman"] < -0.9).all()
    stab = A.stability(final, "lee_translate")
    assert stab["model_same_sign"] == 1.0 and len(stab["loo_family"]) == 2
    assert 0 <= stab["family_linear"]["p"] <= 1


def test_training_change_is_a_paired_ratio_per_model() -> None:
    lee = _lee_table()
    lee.loc[(lee["model"] == "m0") & (lee["step"] == 0), "lee_translate_x"] = 0.0
    change = A.training_change(lee, "lee_translate_x", n_resamples=200).set_index("model")
    assert np.isnan(change.loc["m0", "ratio"])  # constant at initialisation: no ratio
    row = change.loc["m2"]
    assert row["ratio"] == pytest.approx(row["trained"] / row["init"])
    assert row["ratio_lo"] <= row["ratio"] <= row["ratio_hi"] and row["n"] == 6


@pytest.mark.slow
def test_chapter_runs_on_the_committed_zoo_with_other_parameters(tmp_path) -> None:
    """The chapter through papermill on the committed tables, two quantities only."""
    import json

    import jupytext
    import papermill

    from lielib.book.paths import ROOT

    nb = jupytext.read(ROOT / "chapters" / "architectures.py")
    out = tmp_path / "architectures.ipynb"
    papermill.execute_notebook(
        nb, str(out), parameters={"actions": ["translate", "rotate"]}, kernel_name="python3",
        language="python", progress_bar=False, cwd=str(ROOT / "chapters"))
    outputs = [o for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"
               for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    # figures are shown directly or glued for a numbered glue:figure (a prefixed PNG mime type)
    assert sum(any(k.endswith("image/png") for k in o.get("data", {})) for o in outputs) >= 3
    text = json.dumps(outputs)
    assert "Provenance" in text and "python -m lielib.book.zoo_train" in text
