"""Zoo runs beside the zoo: other training seeds, equal passes over the data, companion columns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lielib
from lielib.book import modelsets, zoo, zoo_measure, zoo_train
from lielib.book.results import read_table


def test_steps_for_passes_counts_batches_of_the_models_own_set() -> None:
    assert zoo.steps_for_passes(60_000, 1) == zoo.STEPS  # the zoo's budget is one pass of 60k
    assert zoo.steps_for_passes(2_000, 1) == 32
    assert zoo.steps_for_passes(8_000, 2) == 250
    assert zoo.steps_for_passes(1, 0.01) == 1
    with pytest.raises(ValueError, match="positive"):
        zoo.steps_for_passes(2_000, 0)


def test_run_tags_and_folders_keep_the_zoo_where_it_was(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path))
    assert zoo.run_tag() == "" and zoo.run_tag(1) == "seed1"
    assert zoo.run_tag(0, 2) == "passes2-seed0" and zoo.run_tag(2, 0.5) == "passes0.5-seed2"
    assert zoo_train.run_folders() == (zoo_train.RESULTS_DIR, zoo.cache_dir())
    results, cache = zoo_train.run_folders(1)
    assert results == zoo_train.RESULTS_DIR / "runs" / "seed1"
    assert cache == zoo.cache_dir() / "runs" / "seed1"
    assert zoo_measure.run_folders(0, 4)[2] == zoo_measure.OUT_DIR / "runs" / "passes4-seed0"
    assert zoo_measure.run_folders()[2] == zoo_measure.OUT_DIR


def _tiny(n_train: int) -> tuple[zoo.ZooEntry, tuple]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 32, 32, generator=gen)
    y = torch.randint(0, 10, (200,), generator=gen)
    entry = zoo.ZooEntry("resnet-small-n2k", "resnet10t", "cnn", "resnet", "small", n_train=n_train)
    return entry, ((x, y), (x[:40], y[:40]))


def test_equal_passes_train_each_model_for_its_own_number_of_steps(tmp_path: Path, monkeypatch) -> None:
    entry, data = _tiny(128)  # 128 images, 2 passes at batch 64: 4 steps
    monkeypatch.setitem(zoo._BY_NAME, entry.name, entry)
    monkeypatch.setattr(zoo_train, "fashion_mnist", lambda split, root=None: data[split == "test"])
    kw = {"passes": 2, "cache": tmp_path / "c", "results": tmp_path / "r", "progress": False,
          "command": "cmd"}
    assert zoo_train.train_zoo([entry.name], **kw) == [entry.name]
    assert zoo_train.train_zoo([entry.name], **kw) == []  # done: resumed, not retrained
    table = zoo_train.merge(tmp_path / "r", command="merge")
    row = table.iloc[0]
    assert row["steps"] == 4 and row["recipe_passes"] == 2 and row["recipe_steps"] == 4
    with pytest.raises(ValueError, match="another recipe"):  # the equal-steps run is another run
        zoo_train.train_zoo([entry.name], **{**kw, "passes": None})


def test_companion_columns_are_lee_under_the_other_stencil_and_on_logits() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.GELU(),
                              torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(16, 10)).eval()
    x = torch.randn(3, 1, 16, 16)
    info = {"arch": "toy", "family": "cnn", "params": 1, "accuracy": 0.5, "accuracy_kind": "toy"}
    actions = ["translate_x", "rotate"]
    subject = modelsets.Subject(net, x, info)
    plain = modelsets.measure(subject, model="toy", set_name="toy", actions=actions, metrics=False)
    full = modelsets.measure(subject, model="toy", set_name="toy", actions=actions, metrics=False,
                             companions=True)
    assert not any(c.startswith(("lee_central_", "lee_logits")) for c in plain.columns)
    assert full[plain.columns].equals(plain)  # the paper's columns are unchanged
    for prefix, kw in (("lee_central_", {"stencil": "central"}),
                       ("lee_logits_", {"output": "logits", "stencil": "paper"}),
                       ("lee_logits_central_", {"output": "logits", "stencil": "central"})):
        want = lielib.lee(net, x, actions, **kw)
        for a in actions:
            assert torch.allclose(torch.tensor(full[prefix + a].to_numpy()),
                                  torch.tensor(want[a].to_numpy()), rtol=1e-5, atol=1e-9)
    assert (full["lee_logits_translate_x"] > full["lee_translate_x"]).all()  # softmax damps


def test_measured_seed_run_tables_carry_the_run(tmp_path: Path, monkeypatch) -> None:
    entry, data = _tiny(64)
    monkeypatch.setitem(zoo._BY_NAME, entry.name, entry)
    monkeypatch.setattr(zoo_train, "fashion_mnist", lambda split, root=None: data[split == "test"])
    zoo_train.train_zoo([entry.name], seed=1, steps=2, cache=tmp_path / "c",
                        results=tmp_path / "r", progress=False, command="cmd")
    monkeypatch.setattr(zoo_measure, "fashion_test_images",
                        lambda n, seed: (data[1][0][:n], list(range(n))))
    done = zoo_measure.measure_zoo([entry.name], n_images=2, out=tmp_path / "m",
                                   zoo_results=tmp_path / "r", cache=tmp_path / "c", command="cmd")
    assert done == [entry.name]
    table, _meta = read_table(tmp_path / "m" / f"{entry.name}.csv")
    assert set(table["train_seed"]) == {1} and set(table["steps"]) == {2}
    assert {"lee_central_rotate", "lee_logits_rotate", "rho_rotate"} <= set(table.columns)


@pytest.mark.parametrize("bad", ["passes", "seed", "results-file"])
def test_run_options_are_checked_before_any_training(bad: str, tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    argv = {"passes": ["--passes", "0"], "seed": ["--seed", "-1"],
            "results-file": ["--results", str(a_file)]}[bad]
    with pytest.raises(SystemExit) as exit_info:
        zoo_train.main([*argv, "--only", "resnet-small", "--cache", str(tmp_path / "c")])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "c").exists()
