"""Benchmark `pogona dataset sync` against `aws s3 sync` on the same loopback S3 server.

3,000 objects of about 20 KB on moto's server in its own process; times our cold sync and our
no-change resync, then `aws s3 sync` cold and no-change, and prints the ratios.
Targets: cold sync at least 1.5x faster than aws s3 sync; a no-change resync under 1 s.

    .venv/bin/python bench/sync.py [--objects 3000] [--size 20000] [--workers 16] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.snapshot import Manifest, parse_key  # noqa: E402
from components.storage import open_store  # noqa: E402
from components.sync import sync_snapshot  # noqa: E402


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def aws_command() -> str:
    """The aws CLI next to this interpreter or on PATH; installed with pip only when missing."""
    beside = Path(sys.executable).with_name("aws")
    found = str(beside) if beside.exists() else shutil.which("aws")
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "awscli"], check=True)
        found = str(beside)
    return found


def upload_corpus(source: str, objects: int, size: int) -> Manifest:
    store = open_store(source)
    keys = [f"images/train/{'thermal' if i % 2 else 'visible'}/img_{i:05d}.jpg" for i in range(objects)]
    with ThreadPoolExecutor(32) as pool:
        infos = list(pool.map(lambda k: store.put_bytes(k, os.urandom(size)), keys))
    return Manifest.build(store.uri, {0: "pogona_head"}, [parse_key(info.key).entry(info) for info in infos])


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="cold runs of each tool; the best is kept")
    args = parser.parse_args()

    process, endpoint = start_server()
    os.environ.update(AWS_ENDPOINT_URL_S3=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    aws = aws_command()
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        source = "s3://bench/datasets/bench"
        manifest = upload_corpus(source, args.objects, args.size)
        work = Path(tempfile.mkdtemp(prefix="pogona-bench-"))
        manifest_path = work / "manifest.json"
        manifest.save(manifest_path)
        ours_dir, aws_dir = work / "ours", work / "aws"
        aws_sync = [aws, "s3", "sync", source, str(aws_dir), "--endpoint-url", endpoint, "--only-show-errors"]

        def ours_cold() -> None:
            shutil.rmtree(ours_dir, ignore_errors=True)
            sync_snapshot(manifest_path, ours_dir, workers=args.workers, progress=False)

        def aws_cold() -> None:
            shutil.rmtree(aws_dir, ignore_errors=True)
            subprocess.run(aws_sync, check=True)

        cold_ours = min(timed(ours_cold) for _ in range(args.repeat))
        cold_aws = min(timed(aws_cold) for _ in range(args.repeat))
        started = time.perf_counter()
        resync = sync_snapshot(manifest_path, ours_dir, workers=args.workers, progress=False)
        resync_ours = time.perf_counter() - started
        resync_aws = timed(lambda: subprocess.run(aws_sync, check=True))
        shutil.rmtree(work)
    finally:
        process.terminate()
        process.wait(timeout=10)

    megabytes = args.objects * args.size / 1e6
    print(f"corpus: {args.objects} objects x {args.size} B = {megabytes:.0f} MB on moto; "
          f"{args.workers} workers; best of {args.repeat} cold runs; {os.cpu_count()} CPU cores")
    print(f"cold sync:      pogona {cold_ours:6.2f} s   aws s3 sync {cold_aws:6.2f} s   "
          f"pogona is {cold_aws / cold_ours:.2f}x faster (target >= 1.5x)")
    print(f"no-change sync: pogona {resync_ours:6.2f} s   aws s3 sync {resync_aws:6.2f} s   "
          f"pogona downloaded {resync.downloaded} files, {resync.bytes} bytes (target < 1 s, 0 bytes)")


if __name__ == "__main__":
    main()
