"""The benchmark runs and its two methods compute the same numbers (no timing asserted)."""

import json
import re

import pytest
import torch

from lielib.book.bench import main


def test_bench_smoke_values_agree(tmp_path, capsys):
    out = tmp_path / "bench.json"
    state = torch.random.get_rng_state()
    assert main(["--models", "test_resnet", "--images", "2", "--size", "32", "--repeats", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| test_resnet | 32 |" in printed and "VALUES DIFFER" not in printed
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["values_agree"] and row["speedup"] > 0
    assert report["metadata"]["versions"]["lielib"]
    assert torch.equal(torch.random.get_rng_state(), state), "the benchmark drew from the global RNG"


def test_bench_reports_the_sensitivity_ratio_against_lee(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--models", "test_resnet", "--images", "1", "--size", "32", "--repeats", "1",
                 "--references", "4", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["references"] == 4 and row["sensitivity_lee_agrees"]
    assert row["sensitivity_over_lee"] == row["sensitivity_s_per_image"] / row["lielib_s_per_image"]
    assert "x) |" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--repeats", "--images", "--size", "--references"])
def test_bench_rejects_counts_that_time_nothing(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--models", "test_resnet", flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag} must be >=" in capsys.readouterr().err


def test_bench_end_to_end_rejects_zero_counts():
    from lielib.book.bench import bench_end_to_end

    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench_end_to_end("test_resnet", repeats=0)
    with pytest.raises(ValueError, match="images must be >= 1"):
        bench_end_to_end("test_resnet", images=0)


@pytest.fixture
def no_timing(monkeypatch):
    """Fail the test if any benchmark starts: bad arguments must stop before."""
    def started(*args, **kwargs):
        pytest.fail("the benchmark ran before its arguments were checked")

    monkeypatch.setattr("lielib.book.bench.bench_end_to_end", started)
    monkeypatch.setattr("lielib.book.bench_layers.bench_layerwise", started)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (lambda t: ["--out", str(t)], "is a folder: pass a file name such as"),
        (lambda t: ["--out", str(t / "bench.csv")], "ending in .json"),
        (lambda t: ["--out", str(t / "file" / "bench.json")], "which is a file"),
        (lambda t: ["--models", "test_resnet", "resnet5"],
         r"unknown timm model\(s\): 'resnet5' \(close: resnet50"),
        (lambda t: ["--device", "tpu"], "device 'tpu' is not available here"),
    ],
    ids=["out-folder", "out-suffix", "out-in-file", "model", "device"],
)
def test_bench_checks_its_arguments_before_any_work(tmp_path, capsys, no_timing, args, match):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["--models", "test_resnet", *args(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--model", "nosuch"], r"unknown timm model\(s\): 'nosuch'"),
     (["--action", "rotat"], "unknown action 'rotat'"),
     (["--num-probes", "0"], "--num-probes must be >= 1")],
    ids=["model", "action", "probes"],
)
def test_bench_layers_checks_its_arguments_before_any_work(capsys, no_timing, args, match):
    from lielib.book.bench_layers import main as layers_main

    with pytest.raises(SystemExit) as exit_info:
        layers_main(args)
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
