"""Working-directory packages: a directory packed into a deterministic gzip-compressed tar.

The same tree always gives the same bytes (sorted entries, mtime 0, owner 0/0 with no names,
normalized modes, a gzip header without name or time), so its sha256 names it and the head
stores it once. Regular files, directories and symlinks (kept as links) are packed; other kinds
(sockets, fifos, devices) are skipped.
"""

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Iterator, List, Tuple, Union

from .errors import PackageError

MAX_PACKAGE_BYTES = 512 * 1024 * 1024
_MIB = 1024 * 1024


class _LimitedBuffer(io.BytesIO):
    """A BytesIO that raises PackageError once more than `limit` bytes were written."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__()
        self.limit = limit
        self.what = what

    def write(self, data) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.limit:
            raise PackageError(
                f"the package of {self.what} is larger than {describe_size(self.limit)} compressed; "
                "leave large files (data sets, checkpoints, virtualenvs) out of the working directory"
            )
        return super().write(data)


def describe_size(size: int) -> str:
    """`size` bytes for a message: whole MiB when it is a multiple of 1 MiB, else bytes."""
    return f"{size // _MIB} MiB" if size and size % _MIB == 0 else f"{size} bytes"


def sha256_hex(data: bytes) -> str:
    """The lower-case hex sha256 of `data`, the name packages are stored under."""
    return hashlib.sha256(data).hexdigest()


def _walk(root: Path) -> List[Tuple[str, os.stat_result]]:
    """(relative posix path, lstat) of everything under root, sorted by path (parents first)."""
    found = []
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                found.append((child, st))
                if stat.S_ISDIR(st.st_mode):
                    pending.append(child)
    found.sort(key=lambda item: item[0])
    return found


def _check_link(root: Path, rel: str, target: str) -> None:
    """Refuses a symlink that points outside the directory (the head would refuse it too)."""
    if os.path.isabs(target):
        raise PackageError(
            f"{root / rel} is a symlink to the absolute path {target}, outside the working directory"
        )
    resolved = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    if resolved == ".." or resolved.startswith("../"):
        raise PackageError(f"{root / rel} is a symlink to {target}, outside the working directory")


def _tarinfo(rel: str, st: os.stat_result, root: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(root / rel)
        _check_link(root, rel, target)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
    else:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def pack_directory(path: Union[str, os.PathLike], limit: int = MAX_PACKAGE_BYTES) -> bytes:
    """Packs the directory at `path` into a deterministic .tar.gz; PackageError above `limit` bytes."""
    root = Path(path)
    if not root.is_dir():
        raise PackageError(f"working directory {root} is not a directory")
    buffer = _LimitedBuffer(limit, str(root))
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, st in _walk(root):
                kind = st.st_mode
                if not (stat.S_ISDIR(kind) or stat.S_ISLNK(kind) or stat.S_ISREG(kind)):
                    continue
                info = _tarinfo(rel, st, root)
                if info.type == tarfile.REGTYPE:
                    with open(root / rel, "rb") as file:
                        tar.addfile(info, file)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def chunks(data: bytes, size: int = _MIB) -> Iterator[bytes]:
    """`data` cut into pieces of `size` bytes (one empty piece for empty data)."""
    if not data:
        yield b""
        return
    for start in range(0, len(data), size):
        yield data[start : start + size]
