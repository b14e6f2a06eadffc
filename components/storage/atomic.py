"""The atomic, verified write behind every download and every local write, and the sweep of what killed writers left.

Bytes go to a temporary file beside the destination, locked while it is written, hashed on
the way, verified, then renamed into place: a reader sees the old file or the whole new one.
The lock is what tells a concurrent writer into the same folder (several syncs sharing a
volume) that a temporary file is in flight; one that no process holds was left by a killed
writer and is removed by `remove_if_abandoned`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterable

from components.storage.checksums import ContentCheck
from components.storage.objects import StorageError

PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
TEMPORARY_SUFFIXES = (PART_SUFFIX, LOCK_SUFFIX)  # torn downloads and lock files: never objects
# A writer creates its temporary file and locks it a moment later; an empty, unlocked one younger
# than this may be in that moment, an older one was left by a killed writer.
BIRTH_GRACE_SECONDS = 60.0


def _atomic_target(dest: Path) -> tuple[int, Path]:
    """A new temporary file beside `dest`, locked while it is written, with the umask's usual mode.

    The lock tells a concurrent sync into the same folder that the file is in flight (see
    `remove_if_abandoned`); the caller renames it into place before closing it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{PART_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # non-inheritable: os.open adds O_CLOEXEC
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, tmp


def remove_if_abandoned(path: Path) -> bool:
    """Delete a temporary file that no writer holds (left by a killed process); True when it was deleted.

    Held means locked: a live writer, in this process or another one sharing the folder, keeps
    its file. An empty unlocked file is deleted too once older than `BIRTH_GRACE_SECONDS`
    (younger, its writer may have created it and not locked it yet).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, named = os.fstat(fd), os.stat(path)
    except (BlockingIOError, FileNotFoundError):
        return False  # in flight, or renamed into place meanwhile
    finally:
        os.close(fd)
    newborn = held.st_size == 0 and time.time() - held.st_mtime < BIRTH_GRACE_SECONDS
    if newborn or held.st_ino != named.st_ino:
        return False
    path.unlink(missing_ok=True)
    return True


def write_verified(dest: Path, chunks: Iterable[bytes], where: str, size: int | None = None,
                   checks: Iterable[ContentCheck] = ()) -> int:
    """Stream chunks into `dest` atomically: renamed into place only when `size` and every check hold.

    Returns the bytes written. On any failure `dest` is left as it was and nothing is left behind.
    """
    checks = list(checks)
    hashers = [check.new_hasher() for check in checks]
    fd, tmp = _atomic_target(dest)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            for block in chunks:
                out.write(block)
                for hasher in hashers:
                    hasher.update(block)
                written += len(block)
            if size is not None and written != size:
                raise StorageError(f"{where}: got {written} of {size} bytes")
            for check, hasher in zip(checks, hashers):
                if hasher.digest() != check.expected:
                    raise StorageError(f"{where}: downloaded content does not match its {check.name}: "
                                       f"{check.render(hasher.digest())}, expected {check.render(check.expected)}")
            out.flush()
            os.replace(tmp, dest)  # before the lock goes with the close, so the file is never seen abandoned
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _DISK_FULL:
            raise _disk_full_error(dest, where, exc, size) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def write_atomic(dest: Path, data: bytes) -> None:
    """Write bytes so a reader sees the old file or the whole new one, never a torn one."""
    write_verified(dest, [data], str(dest))


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full_error(dest: Path, where: str, exc: OSError, size: int | None) -> StorageError:
    """A full disk or quota as one line: the local file, what was being written to it, how much it needs and
    how much its filesystem has free (once the torn temporary file is gone)."""
    try:
        free = f"{shutil.disk_usage(dest.parent).free / 1e6:.1f} MB free"
    except OSError:
        free = "unknown free space"
    source = "" if where == str(dest) else f" ({where})"
    needs = f"it needs {size / 1e6:.1f} MB, " if size is not None else ""
    return StorageError(f"cannot write {dest}{source}: {os.strerror(exc.errno or errno.ENOSPC)}; {needs}its "
                        f"filesystem has {free} (free some space or choose another folder)")
