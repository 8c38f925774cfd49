"""The benchmark runs and its two methods compute the same numbers (no timing asserted)."""

import json

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
