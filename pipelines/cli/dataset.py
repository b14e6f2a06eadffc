"""`pogona dataset …`: generate a demo dataset, push a local one, validate a bucket, sync a snapshot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.data.demo_dataset import DEMO_LAYOUTS, DemoSpec, generate_demo_dataset
from components.data.push import push_dataset
from components.data.sync import sync_snapshot
from components.data.validate import validate_dataset


def _demo(args: argparse.Namespace) -> int:
    counts = generate_demo_dataset(args.out, DemoSpec(images=args.images, seed=args.seed, size=args.size,
                                                             layout=args.layout))
    print(f"demo dataset written to {args.out}: " + ", ".join(f"{n} {split}" for split, n in sorted(counts.items())))
    return 0


def _push(args: argparse.Namespace) -> int:
    print(push_dataset(args.source_dir, args.to, workers=args.workers).line())
    return 0


def _validate(args: argparse.Namespace) -> int:
    result = validate_dataset(args.source, args.manifest, args.report, cache_dir=args.cache, workers=args.workers)
    for problem in result.errors:
        print(f"error: {problem}", file=sys.stderr)
    for problem in result.warnings:
        print(f"warning: {problem}", file=sys.stderr)
    images = sum(g.images for groups in result.counts.values() for g in groups.values())
    verdict = "usable" if result.usable else f"NOT usable ({len(result.errors)} errors)"
    print(f"{args.source}: {verdict}; {images} images, fingerprint {result.manifest.fingerprint[:16]}")
    return 0 if result.usable else 1


def _sync(args: argparse.Namespace) -> int:
    summary = sync_snapshot(args.manifest, args.dest, workers=args.workers, progress=not args.quiet,
                            allow_unusable=args.allow_unusable)
    print(summary.line())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pogona dataset` and its sub-commands."""
    group = subparsers.add_parser("dataset", help="generate, push, validate and sync datasets")
    commands = group.add_subparsers(dest="dataset_command", required=True, metavar="SUBCOMMAND")

    demo = commands.add_parser("demo", help="write the generated stand-in dataset (deterministic from --seed)")
    demo.add_argument("--out", required=True, help="store URI or folder to write into")
    demo.add_argument("--images", type=int, default=DemoSpec.images, help="number of images (default %(default)s)")
    demo.add_argument("--seed", type=int, default=DemoSpec.seed, help="random seed (default %(default)s)")
    demo.add_argument("--size", type=int, default=DemoSpec.size, help="image side in pixels (default %(default)s)")
    demo.add_argument("--layout", choices=sorted(DEMO_LAYOUTS), default=DemoSpec.layout,
                      help="contract: images|labels/<split>/<modality>/; roboflow: <split>/images|labels/ as "
                           "Roboflow's YOLO export writes it (default %(default)s)")
    demo.set_defaults(handler=_demo)

    push = commands.add_parser("push", help="upload a local labeled dataset, skipping unchanged files")
    push.add_argument("--from", dest="source_dir", type=Path, required=True,
                      help="local dataset folder, in any layout its data.yaml describes (uploaded as it is)")
    push.add_argument("--to", required=True, help="store URI, e.g. s3://bucket/datasets/pogona")
    push.add_argument("--workers", type=int, default=16, help="parallel uploads (default %(default)s)")
    push.set_defaults(handler=_push)

    validate = commands.add_parser("validate", help="check a dataset and write its snapshot manifest; "
                                                    "exit 0 when usable, 1 when not")
    validate.add_argument("--source", required=True, help="dataset URI, e.g. s3://bucket/datasets/pogona")
    validate.add_argument("--manifest", type=Path, help="write the snapshot manifest (JSON) here")
    validate.add_argument("--report", type=Path, help="write the Markdown report here")
    validate.add_argument("--cache", type=Path, help="keep the downloaded copy here (a later sync into it is free)")
    validate.add_argument("--workers", type=int, default=16, help="parallel downloads (default %(default)s)")
    validate.set_defaults(handler=_validate)

    sync = commands.add_parser("sync", help="materialize exactly the snapshot a manifest names")
    sync.add_argument("--manifest", type=Path, required=True, help="snapshot manifest from `dataset validate`")
    sync.add_argument("--dest", type=Path, required=True, help="local folder; gets the files and data.yaml")
    sync.add_argument("--workers", type=int, default=16, help="parallel downloads (default %(default)s)")
    sync.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    sync.add_argument("--allow-unusable", action="store_true",
                      help="sync a snapshot that validation found unusable (refused by default)")
    sync.set_defaults(handler=_sync)
