"""Atomic, durable writes: a reader (or a resumed job) never sees a half-written file, and a
finished name never points at data that a crash could lose.

A file is written under a temporary name beside its target, `.{name}.{host}.{pid}.XXXX.tmp`,
flushed to disk (fsync), renamed onto the target, and the folder is flushed too, so that the
rename itself survives a node crash. A writer killed mid-write (SIGKILL, a dead node) leaves its
temporary file behind; the next writer of the same target removes those whose process is gone
from this host (another host's, or a live process's, are left alone).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import socket
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fdrl.errors import FdrlError

# A write that fails for lack of room: a full file system, a quota, a file size limit.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def no_room(path: str | os.PathLike | None, err: OSError) -> FdrlError:
    """The sentence for a write of `path` that failed with one of NO_ROOM."""
    return FdrlError(f"could not write {path or 'a file'} ({err.strerror}); free space on its file "
                     "system (or raise the quota) and run again")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Removes the temporary files that earlier writers of `path` on this host left behind
    when their process ended mid-write."""
    host, prefix = socket.gethostname(), f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        parts = tmp.name[len(prefix):-len(".tmp")].rsplit(".", 2)
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _alive(int(parts[1])):
            tmp.unlink(missing_ok=True)


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; flushes it to disk and renames it onto `path` only
    if the block succeeds, then flushes the folder.

    Parent folders are created. On error the temporary file is removed and `path` is untouched;
    a write that fails for lack of room is an FdrlError naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp",
                               prefix=f".{path.name}.{socket.gethostname()}.{os.getpid()}.")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from collaborators
    try:
        yield Path(tmp)
        _fsync(tmp)  # where the file system allocates late (NFS, delayed allocation), ENOSPC here
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    except OSError as err:
        if err.errno in NO_ROOM:
            raise no_room(path, err) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_zip(path: str | os.PathLike) -> None:
    """Reads every member of the zip archive `path` (the format of torch files and .npz) against
    its CRC-32; ValueError names the first that fails. torch.load, and numpy reading an array
    without reaching its member's end, would return a flipped byte as a wrong number."""
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    if bad is not None:
        raise ValueError(f"member {bad} fails its CRC-32 check: the file is corrupt")


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
