"""Benchmark `pogona dataset sync` against `aws s3 sync`: wall time and client CPU per object.

3,000 objects of about 20 KB on two loopback S3 servers, each in its own process: moto's own
server (which closes every connection) and moto's WSGI application under waitress (HTTP/1.1
keep-alive, 16 threads). On each, times our cold sync and our no-change resync, then
`aws s3 sync` cold and no-change, and prints wall time and the client's CPU seconds per object
(user + system of the syncing process; for `aws s3 sync` less the CPU of a run with nothing to
do, its start-up). The server's CPU is not counted: on a real bucket the client's CPU is what
a small pod pays per object.
Targets: cold sync at least 1.5x less client CPU per object than aws s3 sync, every check
kept; a no-change resync under 1 s.

    .venv/bin/python bench/sync.py [--objects 3000] [--size 20000] [--workers 16] [--repeat 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.data.snapshot import Manifest, parse_key  # noqa: E402
from components.storage import open_store  # noqa: E402
from components.data.sync import sync_snapshot  # noqa: E402

SERVERS = {
    "moto": ["-m", "moto.server", "-H", "127.0.0.1", "-p"],
    "keep-alive": [__file__, "--serve-keep-alive"],
}


def serve_keep_alive(port: int) -> None:
    """moto's S3 application under waitress: HTTP/1.1 keep-alive, 16 threads."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from waitress import serve

    serve(DomainDispatcherApplication(create_backend_app), host="127.0.0.1", port=port, threads=16, _quiet=True)


def start_server(kind: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, *SERVERS[kind], str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    raise RuntimeError(f"{kind} server did not start")


def aws_command() -> str:
    """The aws CLI next to this interpreter (the `bench` extra installs it) or on PATH."""
    beside = Path(sys.executable).with_name("aws")
    found = str(beside) if beside.exists() else shutil.which("aws")
    if not found:
        raise SystemExit("bench/sync.py needs the aws CLI: pip install -e '.[bench]'")
    return found


def upload_corpus(source: str, objects: int, size: int) -> Manifest:
    """Random objects in the dataset layout, and their snapshot as validation records it (with sha256)."""
    store = open_store(source)
    keys = [f"images/train/{'thermal' if i % 2 else 'visible'}/img_{i:05d}.jpg" for i in range(objects)]

    def put(key: str):
        data = os.urandom(size)
        return replace(parse_key(key).entry(store.put_bytes(key, data)), sha256=hashlib.sha256(data).hexdigest())

    with ThreadPoolExecutor(32) as pool:
        entries = list(pool.map(put, keys))
    return Manifest.build(store.uri, {0: "pogona_head"}, entries)


@dataclass(frozen=True)
class Cost:
    wall: float
    cpu: float  # user + system seconds of this process and the children it waited for


def measure(action: Callable[[], object]) -> Cost:
    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    started_cpu, started = cpu(), time.perf_counter()
    action()
    return Cost(time.perf_counter() - started, cpu() - started_cpu)


def best(costs: list[Cost]) -> Cost:
    return Cost(min(c.wall for c in costs), min(c.cpu for c in costs))


@dataclass(frozen=True)
class Figures:
    ours_cold: Cost
    aws_cold: Cost
    aws_startup: Cost
    ours_resync: Cost
    aws_resync: Cost
    resync_downloaded: int


def bench_server(kind: str, args: argparse.Namespace, aws: str) -> Figures:
    process, endpoint = start_server(kind)
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    work = Path(tempfile.mkdtemp(prefix="pogona-bench-"))
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        source = "s3://bench/datasets/bench"
        manifest_path = work / "manifest.json"
        upload_corpus(source, args.objects, args.size).save(manifest_path)
        ours_dir, aws_dir = work / "ours", work / "aws"
        aws_sync = [aws, "s3", "sync", source, str(aws_dir), "--endpoint-url", endpoint, "--only-show-errors"]

        def ours_cold() -> None:
            shutil.rmtree(ours_dir, ignore_errors=True)
            sync_snapshot(manifest_path, ours_dir, workers=args.workers, progress=False)

        def aws_cold() -> None:
            shutil.rmtree(aws_dir, ignore_errors=True)
            subprocess.run(aws_sync, check=True)

        nothing = [aws, "s3", "sync", "s3://bench/no-such-prefix", str(work / "empty"), "--endpoint-url", endpoint]
        ours = best([measure(ours_cold) for _ in range(args.repeat)])
        theirs = best([measure(aws_cold) for _ in range(args.repeat)])
        startup = best([measure(lambda: subprocess.run(nothing, check=True)) for _ in range(args.repeat)])
        resync = []
        ours_resync = measure(lambda: resync.append(
            sync_snapshot(manifest_path, ours_dir, workers=args.workers, progress=False)))
        aws_resync = measure(lambda: subprocess.run(aws_sync, check=True))
        return Figures(ours, theirs, startup, ours_resync, aws_resync, resync[0].downloaded)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        process.terminate()
        process.wait(timeout=10)


def report(kind: str, figures: Figures, objects: int) -> None:
    def per_object_ms(cpu: float) -> float:
        return 1000 * cpu / objects

    ours_cpu = figures.ours_cold.cpu
    aws_cpu = figures.aws_cold.cpu - figures.aws_startup.cpu
    print(f"[{kind}] cold sync wall:  pogona {figures.ours_cold.wall:6.2f} s   aws s3 sync {figures.aws_cold.wall:6.2f} s"
          f"   ({figures.aws_cold.wall / figures.ours_cold.wall:.2f}x)")
    print(f"[{kind}] cold sync CPU:   pogona {ours_cpu:6.2f} s = {per_object_ms(ours_cpu):.2f} ms/object   "
          f"aws s3 sync {figures.aws_cold.cpu:6.2f} s - {figures.aws_startup.cpu:.2f} s start-up = "
          f"{per_object_ms(aws_cpu):.2f} ms/object   pogona uses {aws_cpu / ours_cpu:.2f}x less (target >= 1.5x)")
    print(f"[{kind}] no-change sync:  pogona {figures.ours_resync.wall:6.2f} s ({figures.ours_resync.cpu:.2f} s CPU, "
          f"{figures.resync_downloaded} downloaded)   aws s3 sync {figures.aws_resync.wall:6.2f} s "
          f"({figures.aws_resync.cpu:.2f} s CPU)   (target < 1 s, 0 downloaded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="cold runs of each tool; the best is kept")
    parser.add_argument("--servers", nargs="+", choices=sorted(SERVERS), default=list(SERVERS))
    parser.add_argument("--serve-keep-alive", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_keep_alive:
        serve_keep_alive(args.serve_keep_alive)
        return

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    aws = aws_command()
    results = {kind: bench_server(kind, args, aws) for kind in args.servers}
    print(f"corpus: {args.objects} objects x {args.size} B = {args.objects * args.size / 1e6:.0f} MB; "
          f"pogona {args.workers} workers in-process; best of {args.repeat} cold runs; {os.cpu_count()} CPU cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    for kind, figures in results.items():
        report(kind, figures, args.objects)


if __name__ == "__main__":
    main()
