"""The benchmark runs and its two methods compute the same numbers (no timing asserted)."""

import json

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
