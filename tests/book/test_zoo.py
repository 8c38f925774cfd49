"""The zoo: its factors, one head rule with ln(C) loss at initialisation, training and resume."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from lielib.book import modelsets, training, zoo, zoo_train
from lielib.book.paths import NotAvailableError
from lielib.book.results import ROOT, read_table

# One entry per distinct architecture (kind x size): the factors share an architecture.
ARCHS = sorted({(e.kind, e.size): e.name for e in zoo.ZOO}.values())


def test_zoo_is_a_controlled_design() -> None:
    names = zoo.zoo_names()
    assert len(names) == len(set(names)) >= 40
    kinds = {e.kind: e.family for e in zoo.ZOO}
    assert sum(f == "cnn" for f in kinds.values()) >= 3
    assert {"vit", "deit"} <= {k for k, f in kinds.items() if f == "vit"}
    assert sum(f == "mixer" for f in kinds.values()) >= 2
    for kind in kinds:
        sizes = {e.size for e in zoo.ZOO if e.kind == kind}
        assert sizes == {"small", "large"}, kind
        small = [e for e in zoo.ZOO if e.kind == kind and e.size == "small"]
        # one factor at a time around the small base model
        assert {(e.n_train, e.augment) for e in small} == {
            (60_000, "none"), (2_000, "none"), (8_000, "none"), (60_000, "shift")}
        assert len({(e.arch, json.dumps(e.kwargs, sort_keys=True)) for e in small}) == 1
    # every model sees at least one epoch's worth of the full training set
    assert zoo.STEPS * zoo.BATCH_SIZE >= 60_000
    assert zoo.SNAPSHOT_STEPS[0] == 0 and zoo.SNAPSHOT_STEPS[-1] == zoo.STEPS


@pytest.fixture(scope="module")
def fashion_batch() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        x, y = zoo_train.fashion_mnist("train")
    except NotAvailableError as err:
        pytest.skip(str(err))
    idx = zoo_train.train_subset(len(x), 256, seed=1)
    return x[idx], y[idx]


@pytest.mark.parametrize("name", ARCHS)
def test_loss_at_initialisation_is_ln_classes(name: str, fashion_batch) -> None:
    """One head rule for every family: training-mode loss at init within 5% of ln 10."""
    model = zoo.create(name, seed=0)
    loss = zoo_train.init_loss(model, *fashion_batch)
    assert abs(loss - math.log(10)) <= 0.05 * math.log(10), loss
    # at initialisation as the zoo measures it: BatchNorm statistics re-estimated
    training.recalibrate_batchnorm(model, fashion_batch[0])
    with torch.no_grad():
        out = model(fashion_batch[0][:4])
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    # (timm's resnet18 at 32 px is constant on these images at initialisation: its last
    # BatchNorm of every block is zero-initialised, so each stage passes on only its 1x1
    # stride-2 shortcut, which samples the top-left corner: background here.)


def test_creation_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = zoo.create("vit-small", seed=3), zoo.create("vit-small", seed=3)
    c = zoo.create("vit-small", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.head.weight, c.head.weight)
    assert a.head.weight.abs().max() <= 2 * zoo.HEAD_STD and not a.head.bias.any()


def test_preprocess_pads_with_background_and_normalises() -> None:
    images = torch.full((3, 28, 28), 255, dtype=torch.uint8)
    x = zoo.preprocess(images)
    assert x.shape == (3, 1, 32, 32)
    assert torch.allclose(x[:, :, :2], torch.tensor(-zoo.MEAN / zoo.STD))
    assert torch.allclose(x[:, :, 2:30, 2:30], torch.tensor((1 - zoo.MEAN) / zoo.STD))
    with pytest.raises(ValueError, match="uint8"):
        zoo.preprocess(images.float())


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown zoo model 'resnet19'.*resnet-small"):
        zoo.get_entry("resnet19")
    with pytest.raises(modelsets.UnknownModelSetError, match="unknown model 'resnet19'"):
        modelsets.check_model("zoo", "resnet19")


def test_missing_checkpoint_says_how_to_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path))
    assert zoo.checkpoint_path("vit-small", step=0) == tmp_path / "zoo" / "vit-small" / "step0000.pt"
    with pytest.raises(zoo.MissingCheckpointError, match=r"lielib\.book\.zoo_train --only vit-small"):
        zoo.load_trained("vit-small")
    assert issubclass(zoo.MissingCheckpointError, NotAvailableError)


def test_subsets_are_nested_and_fixed() -> None:
    a, b = zoo_train.train_subset(60_000, 2000, 0), zoo_train.train_subset(60_000, 8000, 0)
    assert torch.equal(a, b[:2000]) and len(set(b.tolist())) == 8000
    t1, t2 = zoo_train.test_subset(10_000, 2000), zoo_train.test_subset(10_000, 5000)
    assert set(t1.tolist()) <= set(t2.tolist())
    with pytest.raises(ValueError, match="n_train"):
        zoo_train.train_subset(100, 0, 0)


def test_schedule_warms_up_then_decays_to_zero() -> None:
    values = [training.warmup_cosine(s, 100, 5) for s in range(100)]
    assert values[0] == pytest.approx(0.2) and values[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))
    assert values[-1] < 1e-3
    with pytest.raises(ValueError):
        training.warmup_cosine(0, 10, 11)


def _tiny_data() -> tuple:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 32, 32, generator=gen)
    y = torch.randint(0, 10, (96,), generator=gen)
    return (x, y), (x[:40], y[:40])


def test_smoke_training_snapshots_records_resume_and_recipe_check(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    entry = zoo.ZooEntry("tiny", "resnet10t", "cnn", "resnet", "small", n_train=96)
    out = zoo_train.train_entry(entry, *_tiny_data(), steps=4, cache=cache, progress=False)
    rec = out["record"]
    assert rec["steps"] == 4 and rec["n_test"] == 40 and 0 <= rec["test_acc"] <= 1
    assert [s["step"] for s in out["snapshots"]] == list(zoo_train.snapshot_steps(4))
    assert [c["step"] for c in out["curve"]] == [4] and rec["converged"] in (True, False)
    files = sorted(p.name for p in (cache / "tiny").iterdir())
    assert "final.pt" in files and "step0000.pt" in files and not [f for f in files if "tmp" in f]
    state = training.load_checkpoint(cache / "tiny" / "step0000.pt")
    assert state["record"]["step"] == 0
    # BatchNorm statistics at step 0 were re-estimated, not left at their defaults (0, 1)
    bn = next(v for k, v in state["model"].items() if k.endswith("running_var"))
    assert not torch.allclose(bn, torch.ones_like(bn))


def test_train_zoo_resumes_and_refuses_a_changed_recipe(tmp_path: Path, monkeypatch) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    entry = zoo.ZooEntry("resnet-small", "resnet10t", "cnn", "resnet", "small", n_train=96)
    monkeypatch.setitem(zoo._BY_NAME, "resnet-small", entry)
    data = _tiny_data()
    monkeypatch.setattr(zoo_train, "fashion_mnist", lambda split, root=None: data[split == "test"])
    kw = {"steps": 3, "cache": cache, "results": results, "progress": False, "command": "cmd"}
    assert zoo_train.train_zoo(["resnet-small"], **kw) == ["resnet-small"]
    rpath = results / "models" / "resnet-small.json"
    stamp = rpath.stat().st_mtime_ns
    assert zoo_train.train_zoo(["resnet-small"], **kw) == []  # done: skipped
    assert rpath.stat().st_mtime_ns == stamp
    kept = rpath.read_text()
    rpath.unlink()  # a results file lost (a fresh checkout), the cache kept: restored, not retrained
    assert zoo_train.train_zoo(["resnet-small"], **kw) == []
    assert rpath.read_text() == kept
    with pytest.raises(ValueError, match="another recipe"):
        zoo_train.train_zoo(["resnet-small"], **{**kw, "steps": 5})
    assert zoo_train.train_zoo(["resnet-small"], **{**kw, "steps": 5, "force": True}) == ["resnet-small"]
    table = zoo_train.merge(results, command="merge")
    assert table["name"].tolist() == ["resnet-small"] and table["steps"].tolist() == [5]
    for stem in ("accuracy", "curves", "snapshots"):
        _frame, meta = read_table(results / f"{stem}.csv")
        assert meta["command"] == "merge"
    model, record = zoo.load_trained("resnet-small", root=cache)
    assert not model.training and record["step"] == 5
    assert record["test_acc"] == json.loads(rpath.read_text())["record"]["test_acc"]
    # A checkpoint whose record lacks the final accuracy takes it from the run file beside it.
    ckpt = cache / "resnet-small" / "final.pt"
    state = training.load_checkpoint(ckpt)
    state["record"].pop("test_acc")
    training.save_checkpoint(ckpt, state)
    assert zoo.load_trained("resnet-small", root=cache)[1]["test_acc"] == record["test_acc"]


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(training.CheckpointError, match="empty"):
        training.load_checkpoint(empty)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\xffnot a checkpoint")
    with pytest.raises(training.CheckpointError, match="junk.pt"):
        training.load_checkpoint(junk)
    with pytest.raises(training.CheckpointError, match="folder"):
        training.load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.load_checkpoint(tmp_path / "none.pt")


def test_committed_zoo_results_are_consistent() -> None:
    """What is committed of the zoo: one recipe, the zoo's factors, full-test accuracy."""
    path = ROOT / "results" / "zoo" / "accuracy.csv"
    if not path.is_file():
        pytest.skip("the zoo has not been trained here yet (python -m lielib.book.zoo_train)")
    table, meta = read_table(path)
    assert meta["command"].startswith("python -m lielib.book.zoo_train")
    assert set(table["name"]) <= set(zoo.zoo_names())
    assert (table["steps"] == zoo.STEPS).all() and (table["n_test"] == 10_000).all()
    assert (table["recipe_lr"] == zoo_train.RECIPE["lr"]).all()
    for row in table.itertuples():
        entry = zoo.get_entry(row.name)
        assert (row.n_train, row.augment, row.kind, row.size) == (
            entry.n_train, entry.augment, entry.kind, entry.size)
        assert abs(row.init_loss - math.log(10)) <= 0.05 * math.log(10)


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--workers", "0"], ["--only", "nope"]],
                         ids=["zero-steps", "zero-workers", "unknown-model"])
def test_training_command_rejects_bad_arguments(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        zoo_train.main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
