"""`pogona compile` and `pogona run --local`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from components.config import RunParameters, run_parameter_types
from components.errors import UserError
from pipelines.cli.flags import add_field_flags
from pipelines.kfp_backends import OLDEST, NEWEST
from pipelines.local import RUNNERS

# Run parameters that `pogona run --local` sets itself or takes under flags of its own (--dataset,
# --store, --model-name, --run-id, --no-skip-if-unchanged); every other one is a flag of the same name.
LOCAL_RUN_SETS = {"dataset_uri", "store_uri", "model_name", "run_id", "skip_if_unchanged", "training_device",
                  "num_gpus", "s3_secret_name"}


def run_parameter_flags() -> dict[str, type]:
    """The run parameters `pogona run --local` takes as flags, with their types (components.config.RunParameters)."""
    return {name: kind for name, kind in run_parameter_types().items() if name not in LOCAL_RUN_SETS}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `compile` and `run` to the `pogona` parser."""
    compile_parser = subparsers.add_parser("compile", help="compile the pipeline to KFP YAML")
    compile_parser.add_argument("--output", type=Path, help="where to write (default: the committed file)")
    compile_parser.add_argument("--check", action="store_true",
                                help="exit 1 when the committed YAML differs from what the code compiles to")
    compile_parser.add_argument("--profile", choices=("gpu", "kind"), default="gpu",
                                help="gpu: production placement; kind: CPU-only training for a local cluster")
    compile_parser.add_argument("--cpu-image", help="image for CPU steps (default from pipelines/images.py)")
    compile_parser.add_argument("--cuda-image", help="image for training (default from pipelines/images.py)")
    compile_parser.add_argument("--gpu-node-selector", default="nvidia.com/gpu.present=true",
                                metavar="KEY=VALUE", help="node label the training pod must match")
    compile_parser.add_argument("--run-deadline-hours", type=float,
                                help="end a run that has not finished after this long, pending pods included "
                                     "(default: the profile's; 0 for none; compiled in for --kfp-version 2.17 "
                                     "and newer only)")
    compile_parser.add_argument("--kfp-version", default=str(OLDEST), metavar="X.Y",
                                help=f"oldest KFP backend the pipeline must load on, {OLDEST} to {NEWEST}; newer "
                                     "ones add features (default: %(default)s, the committed pipeline)")
    compile_parser.set_defaults(handler=compile_command)

    run_parser = subparsers.add_parser("run", help="run the whole pipeline locally through kfp.local")
    run_parser.add_argument("--local", action="store_true", required=True,
                            help="run on this machine through kfp.local: no cluster")
    run_parser.add_argument("--runner", choices=RUNNERS, default="subprocess",
                            help="subprocess: each step with this interpreter (default); docker: each step in "
                                 "the image the compiled pipeline names (build them with `make images`)")
    run_parser.add_argument("--demo", action="store_true",
                            help="generate the demo dataset into the store first and use demo-scale settings")
    run_parser.add_argument("--dataset", default="", help="dataset URI (default with --demo: <store>/datasets/demo)")
    run_parser.add_argument("--store", default=".pogona/store", help="object store URI or folder")
    run_parser.add_argument("--run-id", default="", help="folder under runs/ (default: local-<time>)")
    run_parser.add_argument("--model-name", default=RunParameters.model_name, help="default: %(default)s")
    add_field_flags(run_parser, RunParameters, run_parameter_flags(), unset_means="the pipeline's, or --demo's")
    run_parser.add_argument("--no-skip-if-unchanged", action="store_true",
                            help="train even when an earlier run trained this dataset with the same code and parameters")
    run_parser.set_defaults(handler=run_command)


def _placement(args: argparse.Namespace):
    from pipelines.pipeline import Placement

    key, sep, value = args.gpu_node_selector.partition("=")
    if not sep or not key or not value:
        raise UserError(f"--gpu-node-selector {args.gpu_node_selector!r} is not KEY=VALUE")
    placement = Placement.for_profile(args.profile, cpu=args.cpu_image, cuda=args.cuda_image)
    placement = replace(placement, gpu_node_selector=(key, value))
    if args.run_deadline_hours is not None:
        placement = replace(placement, run_deadline_s=round(args.run_deadline_hours * 3600))
    return placement


def compile_command(args: argparse.Namespace) -> int:
    from pipelines.compile import COMMITTED_PIPELINE, compile_pipeline, drift
    from pipelines.kfp_backends import supported

    placement = _placement(args)
    backend = supported(args.kfp_version, "--kfp-version")
    if backend != OLDEST and args.output is None:
        raise UserError(f"--kfp-version {args.kfp_version}: the committed pipeline is compiled for {OLDEST}; "
                        "give --output for another backend")
    target = args.output or COMMITTED_PIPELINE
    if args.check:
        differences = drift(target, placement, backend)
        if differences:
            print("\n".join(differences[:80]), file=sys.stderr)
            print(f"{target} is out of date: run `pogona compile` and commit it", file=sys.stderr)
            return 1
        print(f"{target} matches the code")
        return 0
    print(compile_pipeline(target, placement, backend))
    return 0


def run_command(args: argparse.Namespace) -> int:
    from pipelines.local import run_local, summary_table

    overrides = {name: getattr(args, name) for name in run_parameter_flags() if getattr(args, name) is not None}
    if args.no_skip_if_unchanged:
        overrides["skip_if_unchanged"] = False
    run = run_local(store=args.store, dataset=args.dataset, demo=args.demo, overrides=overrides,
                    run_id=args.run_id, model_name=args.model_name, runner=args.runner)
    print(summary_table(run))
    return 0
