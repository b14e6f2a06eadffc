import errno
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from components.storage import StorageError, open_store, remove_if_abandoned, write_atomic
from components.runtime.eviction import Evicted
from components.storage.atomic import BIRTH_GRACE_SECONDS, write_verified

# A writer that goes through the real write path and stops there: it prints its temporary file's
# path once the file exists (empty, or after one block), then waits to be killed.
_WRITER = """
import sys, threading
from pathlib import Path
from components.storage.atomic import write_verified

def blocks():
    if sys.argv[2] == "one-block":
        yield b"x" * 100_000  # past the write buffer: on disk at once
    part = next(Path(sys.argv[1]).parent.glob("*.part"))
    print(part, flush=True)
    threading.Event().wait()
    yield b""

write_verified(Path(sys.argv[1]), blocks(), "test")
"""


def _start_writer(dest: Path, first: str) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(dest), first], stdout=subprocess.PIPE, text=True,
                              env=env)
    return writer, Path(writer.stdout.readline().strip())


def _age(path: Path) -> None:
    """Make a file look as old as one left by a sync killed minutes ago."""
    past = time.time() - 2 * BIRTH_GRACE_SECONDS
    os.utime(path, (past, past))


@pytest.mark.parametrize("first", ["nothing", "one-block"])
def test_a_temporary_file_is_removed_once_its_writer_was_killed_never_while_it_lives(first: str, tmp_path: Path):
    writer, part = _start_writer(tmp_path / "images" / "a.jpg", first)
    try:
        assert part.is_file() and part.stat().st_size == (0 if first == "nothing" else 100_000)
        _age(part)
        assert not remove_if_abandoned(part) and part.exists(), "deleted a live writer's file"
    finally:
        writer.kill()
        writer.wait()
    assert remove_if_abandoned(part) and not part.exists()


def test_a_temporary_file_written_by_another_thread_of_this_process_is_never_removed(tmp_path: Path):
    """Two syncs in one process (threads) share the folder: the lock must hold against the sweeping
    process itself, as flock's per-open-file locks do (fcntl's per-process ones would not)."""
    written, finish = threading.Event(), threading.Event()

    def blocks():
        yield b"x" * 100_000
        written.set()
        finish.wait()

    writer = threading.Thread(target=write_verified, args=(tmp_path / "images" / "a.jpg", blocks(), "test"))
    writer.start()
    try:
        assert written.wait(timeout=30)
        [part] = (tmp_path / "images").glob("*.part")
        _age(part)
        assert not remove_if_abandoned(part) and part.exists(), "deleted this process's own file in flight"
    finally:
        finish.set()
        writer.join(timeout=30)
    assert (tmp_path / "images" / "a.jpg").stat().st_size == 100_000 and not list(tmp_path.rglob("*.part"))


def test_an_unheld_empty_temporary_file_is_kept_only_while_it_may_be_being_born(tmp_path: Path):
    newborn, abandoned, torn = (tmp_path / f".{name}.jpg.0123.part" for name in ("newborn", "abandoned", "torn"))
    for path in (newborn, abandoned):
        path.touch()
    torn.write_bytes(b"torn")
    _age(abandoned)
    assert not remove_if_abandoned(newborn) and newborn.exists()  # its writer may not have locked it yet
    assert remove_if_abandoned(abandoned) and not abandoned.exists()
    assert remove_if_abandoned(torn) and not torn.exists()  # written to, so once locked: its writer is gone


@pytest.fixture
def tiny_filesystem(tmp_path: Path):
    """A 256 KiB tmpfs: a real full disk, written through the real write path. Mounting needs root."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_names_the_local_file_and_the_space_left(s3_bucket: str, tiny_filesystem: Path):
    store = open_store(s3_bucket)
    info = store.put_bytes("images/big.jpg", os.urandom(1024 * 1024))
    dest = tiny_filesystem / "data" / "big.jpg"
    with pytest.raises(StorageError) as error:
        store.download("images/big.jpg", dest, info)
    message = str(error.value)
    assert message.startswith(f"cannot write {dest} ({s3_bucket}/images/big.jpg): No space left on device")
    assert re.search(r"; it needs 1\.0 MB, its filesystem has 0\.[0-3] MB free", message) and "\n" not in message
    assert list(dest.parent.iterdir()) == []  # the torn temporary file is gone too


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_written_atomically_get_the_mode_the_umask_gives(umask: int, s3_bucket: str, tmp_path: Path):
    previous = os.umask(umask)
    try:
        store = open_store(tmp_path / "store")
        store.put_bytes("models/m/production.json", b"{}")
        (tmp_path / "best.pt").write_bytes(b"weights")
        store.upload_file(tmp_path / "best.pt", "runs/r/best.pt")
        write_atomic(tmp_path / "local" / "report.md", b"# report")
        open_store(s3_bucket).put_bytes("x.jpg", b"jpg")
        open_store(s3_bucket).download("x.jpg", tmp_path / "synced" / "x.jpg")
    finally:
        os.umask(previous)
    for path in (tmp_path / "store/models/m/production.json", tmp_path / "store/runs/r/best.pt",
                 tmp_path / "local/report.md", tmp_path / "synced/x.jpg"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path




def test_a_full_disk_under_an_atomic_write_names_the_file_once(tiny_filesystem: Path):
    dest = tiny_filesystem / "report" / "report.html"
    with pytest.raises(StorageError) as error:
        write_atomic(dest, os.urandom(1024 * 1024))
    assert re.fullmatch(rf"cannot write {re.escape(str(dest))}: No space left on device; its filesystem has "
                        r"0\.[0-3] MB free \(free some space or choose another folder\)", str(error.value))
    assert list(dest.parent.iterdir()) == []


def test_a_temporary_name_taken_by_another_writer_is_never_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two writers whose random names collide: the second takes a new name, never the first one's file."""
    names = iter(["aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr("components.storage.atomic.secrets.token_hex", lambda size: next(names))
    first = tmp_path / "first.bin"
    write_atomic(first, b"first")  # took .first.bin.aaaaaaaaaaaa.part, then renamed it into place
    in_flight = tmp_path / ".second.bin.aaaaaaaaaaaa.part"
    in_flight.write_bytes(b"another writer's bytes, in flight")
    write_atomic(tmp_path / "second.bin", b"second")
    assert in_flight.read_bytes() == b"another writer's bytes, in flight"
    assert (tmp_path / "second.bin").read_bytes() == b"second" and first.read_bytes() == b"first"


def test_a_file_with_a_long_name_is_written_whole(tmp_path: Path):
    """The temporary name beside it adds 19 characters: a 200-character name (Linux allows 255) still fits."""
    dest = tmp_path / ("frame-" + "0" * 190 + ".jpg")
    write_atomic(dest, b"jpeg")
    assert dest.read_bytes() == b"jpeg" and [path.name for path in tmp_path.iterdir()] == [dest.name]


class _FailsAtClose:
    """A file whose close reports `failure` once it has closed: NFS reports a write error at close, and a SIGTERM
    (raising `Evicted`) may land there. The write renames its file into place before closing it."""

    def __init__(self, out, failure: BaseException):
        self.out, self.failure = out, failure

    def __enter__(self):
        return self.out

    def __exit__(self, *exc_info):
        self.out.close()
        raise self.failure


@pytest.mark.parametrize("failure, raised, message", [
    (OSError(errno.ENOSPC, "No space left on device"), StorageError,
     r"cannot write .*report\.html: No space left on device"),
    (Evicted(), Evicted, None),
])
def test_a_failure_after_the_rename_is_reported_as_itself(failure: BaseException, raised: type, message: str | None,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Not as a missing temporary file: the temporary file is already the destination."""
    fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FailsAtClose(fdopen(fd, mode), failure))
    dest = tmp_path / "report.html"
    with pytest.raises(raised, match=message):
        write_atomic(dest, b"<html>")
    monkeypatch.undo()
    assert [path.name for path in tmp_path.iterdir()] == ["report.html"]
