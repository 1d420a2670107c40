"""One writer per run folder: an exclusive `fcntl.flock` on RUN_DIR/.lock.

Two `fdrl train` processes writing one run folder (a second run started by hand beside
Snakemake, or a requeued job whose first attempt still runs) would interleave their metrics and
overwrite each other's checkpoints. So the writer holds an exclusive lock for as long as it
trains: a second writer stops at once, naming the holder (host, PID, start time) that the lock
file records.

The lock belongs to the open file: the kernel drops it when its process ends, however it ends
(SIGKILL included), so a lock file left behind by a dead process is simply free to take; nothing
has to be cleaned up by hand. Across nodes it holds where the shared file system implements
flock: NFS (Linux emulates it with whole-file POSIX locks since 2.6.12), Lustre mounted with
`-o flock` (with `localflock` it is node-local only), BeeGFS with global file locks enabled. A
node that dies holding a lock on NFS keeps it until the server's lease expires (90 s by default),
so a requeued SLURM job (SLURM_RESTART_COUNT > 0) waits up to REQUEUE_WAIT seconds for its
previous attempt's lock before giving up.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from fdrl.errors import FdrlError

LOCK_NAME = ".lock"
REQUEUE_WAIT = 300.0


def requeue_wait() -> float:
    """How long to wait for a run's lock: REQUEUE_WAIT in a requeued SLURM job, else 0."""
    return REQUEUE_WAIT if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 else 0.0


def _holder(path: Path) -> str:
    """Who holds the lock, as the lock file records it."""
    try:
        h = json.loads(path.read_text())
        return f"PID {h['pid']} on {h['host']} since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def run_lock(folder: str | os.PathLike, wait: float = 0.0) -> Iterator[None]:
    """Holds the exclusive lock of the run folder `folder` (created if needed) for the block;
    waits up to `wait` seconds for it, then raises an FdrlError naming the holder. A folder the
    lock created (with the parents it created) is removed again if the block fails before
    writing anything into it."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    f = open(path, "a+")
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FdrlError(
                        f"run folder {folder} is being written by {_holder(path)}; wait for it to "
                        f"finish, or stop it (a lock whose process has ended is released by itself; "
                        f"on a file system that keeps it, delete {path})") from None
                time.sleep(min(1.0, wait))
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                raise FdrlError(f"the file system of {folder} does not support file locks "
                                f"({err.strerror}); put runs on one that does (Lustre: mount "
                                "with -o flock)") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        f.flush()
        try:
            yield
        except BaseException:
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                path.unlink()
                for made in created:  # innermost first; each now empty
                    made.rmdir()
            raise
    finally:
        f.close()  # releases the lock
