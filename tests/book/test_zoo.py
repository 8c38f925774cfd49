"""The mini-zoo: coverage of families, models at 32 px, smoke training, resume, records."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from lielib.book import modelsets, train, zoo
from lielib.book.results import ROOT, read_table


def test_zoo_spans_the_families_of_the_paper() -> None:
    names = zoo.zoo_names()
    assert len(names) == len(set(names)) >= 15
    archs = {e.arch for e in zoo.ZOO}
    assert len(archs) >= 14
    for pattern in (r"^resnet", r"^convnext", r"^(efficientnet|mobilenet)", r"^(vgg|densenet)",
                    r"^(vit|deit)_", r"^mixer_", r"^resmlp_"):
        assert any(re.match(pattern, a) for a in archs), pattern
    assert {e.family for e in zoo.ZOO} == {"cnn", "vit", "mixer"}
    vit_patches = {e.kwargs["patch_size"] for e in zoo.ZOO if e.family == "vit"}
    assert len(vit_patches) >= 3
    assert {e.budget for e in zoo.ZOO} == set(zoo.BUDGETS)
    for e in zoo.ZOO:
        assert e.model_kwargs()["in_chans"] == 1 and e.model_kwargs()["num_classes"] == 10
        assert e.budget_for("full") == zoo.FULL_BUDGET


@pytest.mark.parametrize("name", zoo.zoo_names())
def test_every_zoo_model_runs_at_32px(name: str) -> None:
    model = zoo.create(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # No zero-initialised head: a model at initialisation must not be trivially invariant.
    assert out.std(0).abs().sum() > 0


def test_creation_is_seeded() -> None:
    a, b = zoo.create("vit_p16", seed=3), zoo.create("vit_p16", seed=3)
    c = zoo.create("vit_p16", seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.head.weight, c.head.weight)


def test_preprocess_pads_with_background_and_normalises() -> None:
    images = torch.full((3, 28, 28), 255, dtype=torch.uint8)
    x = zoo.preprocess(images)
    assert x.shape == (3, 1, 32, 32)
    assert torch.allclose(x[:, :, :2], torch.tensor(-zoo.MEAN / zoo.STD))
    assert torch.allclose(x[:, :, 2:30, 2:30], torch.tensor((1 - zoo.MEAN) / zoo.STD))
    with pytest.raises(ValueError, match="uint8"):
        zoo.preprocess(images.float())


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown zoo model 'resnet19'.*resnet18"):
        zoo.get_entry("resnet19")
    with pytest.raises(modelsets.UnknownModelSetError, match="unknown model 'resnet19'"):
        modelsets.check_model("zoo", "resnet19")
    with pytest.raises(modelsets.UnknownModelSetError, match="Known sets: zoo"):
        modelsets.set_models("imagenet-zoo")


def test_missing_checkpoint_says_how_to_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path))
    assert zoo.checkpoint_path("vit_p4") == tmp_path / "zoo" / "vit_p4.pt"
    with pytest.raises(zoo.MissingCheckpointError, match=r"python -m lielib\.book\.train --zoo --only vit_p4"):
        zoo.load_trained("vit_p4")
    with pytest.raises(zoo.MissingCheckpointError, match="LIELIB_CACHE"):
        modelsets.load_subject("zoo", "vit_p4", n_images=2)


def test_smoke_training_checkpoints_records_and_resumes(tmp_path: Path) -> None:
    """A few steps of one tiny zoo model; the rerun skips it; the checkpoint reloads."""
    cache, results = tmp_path / "cache", tmp_path / "results"
    config = train.TrainConfig(max_steps=3, batch_size=16)
    kwargs = {"config": config, "n_train": 48, "epochs": 1, "cache": cache, "results": results, "n_test": 64,
                  "progress": False, "command": "python -m lielib.book.train --zoo --only vit_p16"}
    table = train.train_zoo(["vit_p16"], **kwargs)
    assert table["name"].tolist() == ["vit_p16"]
    rec = table.iloc[0]
    assert rec["steps"] == 3 and rec["n_train"] == 48 and rec["n_test"] == 64
    assert 0 <= rec["test_acc"] <= 1 and rec["budget"] == "custom"
    ckpt = cache / "vit_p16.pt"
    assert ckpt.is_file() and not list(cache.glob(".*.tmp"))
    _frame, meta = read_table(results / "accuracy.csv")
    assert meta["command"] == "python -m lielib.book.train --zoo --only vit_p16"
    assert meta["models"] == ["vit_p16"] and meta["recipe"]["max_steps"] == 3
    stamp = ckpt.stat().st_mtime_ns
    train.train_zoo(["vit_p16"], **kwargs)  # resumes: nothing to do
    assert ckpt.stat().st_mtime_ns == stamp
    model, record = zoo.load_trained("vit_p16", root=cache)
    assert record["test_acc"] == rec["test_acc"] and not model.training


def test_learning_rate_schedule_warms_up_then_decays_to_zero() -> None:
    f = train._lr_lambda(100, 5)
    values = [f(s) for s in range(100)]
    assert values[0] == pytest.approx(0.2) and values[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))
    assert values[-1] < 1e-3


def test_test_subset_is_fixed_and_nested() -> None:
    a, b = train.test_subset(10_000, 2000), train.test_subset(10_000, 5000)
    assert torch.equal(a, train.test_subset(10_000, 2000))
    assert set(a.tolist()) <= set(b.tolist()) and len(set(a.tolist())) == 2000


def test_committed_zoo_accuracies() -> None:
    """results/zoo/accuracy.csv: every zoo model trained by the training command, spread out."""
    table, meta = read_table(ROOT / "results" / "zoo" / "accuracy.csv", how="python -m lielib.book.train --zoo")
    assert table["name"].tolist() == zoo.zoo_names()
    assert meta["command"].startswith(("python -m lielib.book.train --zoo", "python -m lielib.train --zoo"))
    assert table["test_acc"].between(0.2, 1).all()  # all well above chance (0.1)
    assert table["test_acc"].max() - table["test_acc"].min() > 0.15  # budgets spread accuracy
    assert (table["recipe_max_steps"].isna()).all()
    for name in zoo.zoo_names():
        rec = json.loads((ROOT / "results" / "zoo" / "models" / f"{name}.json").read_text())["record"]
        entry = zoo.get_entry(name)
        assert rec["budget"] == entry.budget and rec["n_train"] == zoo.BUDGETS[entry.budget].n_train
