"""`pogona dataset push` and `validate` evicted (SIGTERM) with a transfer in flight: their thread pools start no
further work, so they exit within the grace period, with the one line every evicted command ends with. (Validate's
downloads go through sync's `StopsOnEviction`; its image checks, which follow them, ask `raise_if_evicted` as push's
uploads do.)"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from components.data.push import dataset_files, push_dataset
from components.storage import open_store
from processes import start_pogona, wait_until

EVICTED_LINE = ("pogona dataset: the pod was evicted (SIGTERM): stopped and cleaned up; a retry goes on from what "
                "was stored")


def _evict_when_held(process, s3_faults, what: str) -> str:
    try:
        wait_until(s3_faults.held.is_set, process, what)
        process.send_signal(signal.SIGTERM)
        s3_faults.release()
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143 and stderr.splitlines()[-1] == EVICTED_LINE, stderr[-3000:]
    assert "Traceback" not in stderr
    return stderr


@pytest.mark.slow
def test_an_evicted_push_starts_no_further_upload(demo_dataset_dir: Path, s3_bucket: str, s3_faults):
    dest = f"{s3_bucket}/datasets/pushed"
    s3_faults.inject_on("PUT", "datasets/pushed/", "hold")  # one worker: the first upload's reply waits
    process = start_pogona("dataset", "push", "--from", str(demo_dataset_dir), "--to", dest, "--workers", "1")
    _evict_when_held(process, s3_faults, "the first upload")
    # A few uploads may start before the main thread runs the signal's handler, then none: without the stop, the
    # pool uploaded every queued file before the push could exit.
    assert len(list(open_store(dest).list())) < len(dataset_files(demo_dataset_dir)) // 2


@pytest.mark.slow
def test_an_evicted_validate_starts_no_further_download(demo_dataset_dir: Path, s3_bucket: str, s3_faults,
                                                        tmp_path: Path):
    source = f"{s3_bucket}/datasets/demo"
    push_dataset(demo_dataset_dir, source)
    cache = tmp_path / "cache"
    s3_faults.inject_on("GET", "datasets/demo/images/", "hold")  # the first image download, half-way
    process = start_pogona("dataset", "validate", "--source", source, "--manifest", str(tmp_path / "manifest.json"),
                           "--cache", str(cache), "--workers", "1")
    _evict_when_held(process, s3_faults, "the first image download")
    images = [path for path in cache.rglob("*") if path.is_file() and path.suffix in {".jpg", ".png"}]
    assert len(images) < len(list((demo_dataset_dir / "images").rglob("*.jpg"))) // 2
    assert not [path for path in cache.rglob("*") if path.is_file() and path.suffix not in {".jpg", ".png", ".txt",
                                                                                             ".yaml"}]
