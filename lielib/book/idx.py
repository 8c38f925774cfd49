"""The idx format of MNIST and Fashion-MNIST, read with errors that name the file.

An idx file is ``0 0 <dtype code> <ndim>``, ``ndim`` big-endian uint32 sizes, then the
values in C order (LeCun et al., the MNIST database); the book's copies are gzipped.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DataFileError", "read_idx"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFileError(ValueError):
    """A data file exists but cannot be read (corrupt, truncated, wrong format); names it."""


def _bad(path: Path, what: str, fix: str) -> DataFileError:
    return DataFileError(f"{path}: {what}. {fix}")


def read_idx(path: str | os.PathLike, fix: str = "Replace or remove the file.") -> np.ndarray:
    """Parse one gzipped idx file: magic ``0 0 dtype ndim``, ``ndim`` big-endian int32 sizes.

    Args:
        path: the ``.gz`` file.
        fix: what to do about a bad file, appended to the error message.

    Raises:
        DataFileError: not gzip, truncated, not idx, or a header that disagrees with the
            data; the message names the file and says what to do.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise _bad(path, f"cannot be decompressed ({type(err).__name__}: {err}); it is "
                   "not a complete gzip file", fix) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise _bad(path, f"is not an idx file (bad magic number {raw[:4]!r})", fix)
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise _bad(path, f"has a broken idx header (ndim {ndim}, {len(raw)} bytes)", fix)
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    data = np.frombuffer(raw, dtype, count=(len(raw) - 4 - 4 * ndim) // dtype.itemsize,
                         offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)) or (len(raw) - 4 - 4 * ndim) % dtype.itemsize:
        raise _bad(path, f"header says shape {shape} but the file holds {data.size} "
                   "values (truncated?)", fix)
    return data.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
