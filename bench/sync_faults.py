"""Benchmark `pogona dataset sync` through a throttling, flaky S3: it completes, byte-identical, and how much slower.

10,000 objects of about 10 KB on moto's S3 application under waitress (keep-alive, its own
process), reached through the test suite's fault proxy (tests/faults.py). The same snapshot
is synced twice in one run, each into an empty folder, both through the proxy: first with no
faults (the clean run), then with 20% of requests answered 503 SlowDown and 5% of GET bodies
reset half-way. Prints both wall times, the faults given, the retries taken, the lowest
in-flight limit the throttle reached, and whether every file equals the uploaded bytes.
Target: the faulty sync completes and every file is byte-identical.

    .venv/bin/python bench/sync_faults.py [--objects 10000] [--size 10000] [--workers 16]
        [--slowdown 0.2] [--resets 0.05]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from faults import FaultProxy  # noqa: E402
from sync import start_server, upload_corpus  # noqa: E402

from components.data.snapshot import Manifest  # noqa: E402
from components.data.sync import sync_snapshot  # noqa: E402
from components.storage import open_store, sha256_file  # noqa: E402


class Retries(logging.Handler):
    """Counts the retry warnings the store logs (one per retry), instead of printing thousands of them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("retrying ")


def timed_sync(manifest_path: Path, dest: Path, workers: int) -> float:
    started = time.perf_counter()
    sync_snapshot(manifest_path, dest, workers=workers, progress=False)
    return time.perf_counter() - started


def identical(manifest: Manifest, dest: Path) -> bool:
    """Every file holds exactly the bytes uploaded: the sha256 taken of them before the upload."""
    return all(sha256_file(dest / entry.key) == entry.sha256 for entry in manifest.entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--slowdown", type=float, default=0.2, help="share of requests answered 503 SlowDown")
    parser.add_argument("--resets", type=float, default=0.05, help="share of GET bodies reset half-way")
    args = parser.parse_args()

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    retries = Retries()
    logger = logging.getLogger("pogona")
    logger.addHandler(retries)
    logger.propagate = False
    process, endpoint = start_server("keep-alive")
    work = Path(tempfile.mkdtemp(prefix="pogona-bench-faults-"))
    try:
        import boto3

        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        source = "s3://bench/datasets/bench"
        manifest = upload_corpus(source, args.objects, args.size)
        manifest_path = work / "manifest.json"
        manifest.save(manifest_path)

        with FaultProxy(endpoint) as proxy:
            os.environ["AWS_ENDPOINT_URL_S3"] = proxy.url  # a new client, connection pool and throttle
            clean = timed_sync(manifest_path, work / "clean", args.workers)
            proxy.at_random("503", args.slowdown)
            proxy.at_random("truncate", args.resets, "GET")
            requests_before = proxy.requests
            faulty = timed_sync(manifest_path, work / "faulty", args.workers)
            requests = proxy.requests - requests_before
            lowest_limit = open_store(source).throttle.lowest
        same = identical(manifest, work / "clean") and identical(manifest, work / "faulty")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        process.terminate()
        process.wait(timeout=10)

    print(f"corpus: {args.objects} objects x {args.size} B = {args.objects * args.size / 1e6:.0f} MB; "
          f"{args.workers} workers; {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f}")
    print(f"clean sync through the proxy:  {clean:7.2f} s")
    print(f"faulty sync through the proxy: {faulty:7.2f} s ({faulty / clean:.2f}x): {requests} requests, "
          f"{proxy.injected.get('503', 0)} answered 503 SlowDown, {proxy.injected.get('truncate', 0)} GET bodies "
          f"reset; {retries.count} retries; in-flight limit down to {lowest_limit}")
    print(f"byte-identical: {'yes' if same else 'NO'} ({args.objects} files, both syncs)")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
