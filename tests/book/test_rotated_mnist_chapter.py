"""The rotated-MNIST chapter runs on a results folder made by the smoke preset, and glues what the tables hold."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lielib.book.paths import ROOT
from lielib.book.rotated_mnist.__main__ import main
from lielib.book.rotated_mnist.config import preset

pytestmark = pytest.mark.slow
CHAPTER = ROOT / "chapters" / "rotated_mnist.py"


def run_chapter(out: Path, **parameters) -> dict[str, str]:
    """Execute the chapter with papermill; ``name -> glued text`` (markdown if any, else plain)."""
    jupytext = pytest.importorskip("jupytext")
    papermill = pytest.importorskip("papermill")
    papermill.execute_notebook(jupytext.read(CHAPTER), str(out), parameters=parameters,
                               kernel_name="python3", language="python", cwd=str(CHAPTER.parent),
                               progress_bar=False)
    glued = {}
    for cell in json.loads(out.read_text())["cells"]:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if record:
                data, prefix = output["data"], record["mime_prefix"]
                text = data.get(prefix + "text/markdown") or data.get(prefix + "text/plain")
                glued[record["name"]] = "".join(text) if isinstance(text, list) else text
    return glued


def unquote(text: str) -> str:
    return text.strip("'\"")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("rotated_mnist")
    main(["--preset", "smoke", "--out", str(root / "smoke"), "--cache", str(root / "cache")])
    return root, run_chapter(root / "out.ipynb", results_dir=str(root), preset="smoke")


def test_the_chapter_glues_the_smoke_tables(smoke):
    root, glued = smoke
    cfg = preset("smoke")
    assert "`smoke` preset" in glued["source_note"] and "not in" not in glued["source_note"]
    assert int(glued["n_epochs"]) == cfg.epochs and int(glued["lee_size"]) == cfg.lee_size
    assert unquote(glued["mask_ratio"]) == "50%"
    final = pd.read_csv(root / "smoke" / "final.csv").set_index("variant")
    assert f"{final.loc['mae', 'test_accuracy']:.1%}" in glued["mae_accuracies"]
    assert float(glued["acc_best"]) == pytest.approx(final["test_accuracy"].max())
    # smoke runs only the unaugmented MAE variant, so it is the best MAE variant
    assert unquote(glued["target_mae"]).startswith(
        "met" if final.loc["mae", "test_accuracy"] >= 0.9 else "not met")
    pre = pd.read_csv(root / "smoke" / "pretraining.csv")
    assert float(glued["mae_ratio_last"]) == pytest.approx(pre["loss_over_reference"].iloc[-1])
    summary = pd.read_csv(root / "smoke" / "summary.csv")
    rot = summary[(summary["variant"] == "mae") & (summary["action"] == "rotate")].set_index("epoch")
    assert float(glued["lee_rot1_mae"]) == pytest.approx(rot.loc[1, "lee"])
    assert float(glued["lee_rot_last_mae"]) == pytest.approx(rot.loc[cfg.epochs, "lee"])


def test_the_contrast_sentences_follow_the_intervals(smoke):
    root, glued = smoke
    con = pd.read_csv(root / "smoke" / "contrasts.csv")
    for metric, since in ((m, e) for m in ("lee", "rho") for e in ("1", "0")):
        part = con[(con["question"] == "training") & (con["metric"] == metric)
                   & con["b"].str.endswith(f"@{since}")]
        below, above = int((part["high"] < 0).sum()), int((part["low"] > 0).sum())
        text = unquote(glued[f"training_{metric}_{since}"])
        assert f"below zero (lower after training) for {below} of {len(part)} variants" in text
        assert f"above zero for {above} " in text
    # the smoke preset has no ViT from scratch and no unaugmented CNN: nothing to pair
    assert unquote(glued["pretraining_lee"]).startswith("not testable")
    assert unquote(glued["augmentation_rho"]).startswith("not testable")


def test_a_missing_preset_falls_back_to_the_cpu_results_and_says_so(tmp_path):
    committed = ROOT / "results" / "rotated_mnist" / "cpu"
    if not (committed / "contrasts.csv").is_file():
        pytest.skip("the cpu preset's results are not committed")
    (tmp_path / "cpu").symlink_to(committed, target_is_directory=True)
    glued = run_chapter(tmp_path / "out.ipynb", results_dir=str(tmp_path), preset="full")
    assert "`full` preset's results are not in" in glued["source_note"]
    assert "`cpu` preset" in glued["source_note"]
    assert int(glued["n_epochs"]) == preset("cpu").epochs
