"""The book's command lines check their arguments before any work: output folders that are
files, settings out of range; a clear message, no traceback, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def taken(tmp_path: Path) -> Path:
    """A file where a folder is expected."""
    path = tmp_path / "taken"
    path.write_text("not a folder\n")
    return path


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*args, **kwargs):
        pytest.fail("work started before the arguments were checked")

    monkeypatch.setattr("lielib.book.rotated_mnist.__main__.run_experiment", started)
    monkeypatch.setattr("lielib.book.aliasing.cli.run", started)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--mask-ratio", "1.5"], r"--mask-ratio is the share of patches .* in \(0, 1\).*got 1.5"),
        (["--mask-ratio", "0"], r"--mask-ratio .*got 0.0"),
        (["--patch-size", "5"], "do not build the models: img_size 28 is not a multiple of patch_size 5"),
        (["--embed-dim", "15", "--num-heads", "2"], "--embed-dim 15 must be a multiple of --num-heads 2"),
        (["--lr", "0"], "--lr must be positive"),
        (["--layer-decay", "1.5"], r"--layer-decay must be in \(0, 1\]"),
        (["--warmup-epochs", "5"], r"--warmup-epochs must be between 0 and --epochs \(2\)"),
        (["--cnn-width", "0"], "--cnn-width must be at least 1"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (lambda t: ["--out", str(t)], "is a file: pass a folder"),
        (lambda t: ["--cache", str(t / "sub")], "which is a file"),
    ],
    ids=["mask-ratio", "mask-ratio-zero", "patch", "heads", "lr", "layer-decay", "warmup",
         "cnn-width", "jobs", "out", "cache"],
)
def test_rotated_mnist_refuses_bad_arguments_before_training(taken: Path, nothing_runs, args,
                                                             match: str) -> None:
    from lielib.book.rotated_mnist.__main__ import main

    args = args(taken) if callable(args) else args
    with pytest.raises(SystemExit, match=match):
        main(["--preset", "smoke", *args])
    assert taken.read_text() == "not a folder\n"


def test_rotated_mnist_default_settings_pass_the_checks() -> None:
    from lielib.book.rotated_mnist.__main__ import check_config
    from lielib.book.rotated_mnist.config import PRESETS, preset

    for name in PRESETS:
        check_config(preset(name))


def test_aliasing_refuses_an_out_that_is_a_file(taken: Path, nothing_runs,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from lielib.book.aliasing.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(taken), "--only", "methods"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {taken} is a file: pass a folder" in err and "Traceback" not in err
