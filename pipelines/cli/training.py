"""`pogona sanity`, `pogona train`, `pogona evaluate`: doors onto components.training.sanity, .train and .evaluate.

Heavy imports (torch, ultralytics) happen inside the handlers so `pogona --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.config import SanityConfig, TrainConfig, check_settings, user_settings
from components.errors import UserError
from pipelines.cli.flags import add_field_flags, config_from_flags


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="dataset folder containing data.yaml, or the data.yaml itself")
    source.add_argument("--manifest", type=Path, help="snapshot manifest; the snapshot is materialized into the "
                                                      "cache (POGONA_CACHE_DIR) first")


def _dataset(args: argparse.Namespace) -> Path:
    """The local dataset: --data as given, or the --manifest snapshot synced into the cache."""
    if args.data is not None:
        return args.data
    if not args.manifest.is_file():
        raise UserError(f"manifest {args.manifest} does not exist")
    from components.data.sync import materialize

    return materialize(str(args.manifest))


def _weights_or_model(weights: str, model: str) -> tuple[str, str]:
    """`--weights yolo11n` names an architecture to build, not a checkpoint to load."""
    if weights and "://" not in weights and not Path(weights).suffix:
        return "", weights
    return weights, model


def _sanity(args: argparse.Namespace) -> int:
    from components.training.sanity import run_sanity

    config = config_from_flags(args, SanityConfig)
    weights, model = _weights_or_model(args.weights, args.model)
    check_settings(TrainConfig(model=model, weights=weights), config)  # the sanity gate trains the run's model
    verdict = run_sanity(_dataset(args), args.verdict, config, weights=weights, model=model, store=args.store)
    print(f"sanity: {verdict.verdict} after {verdict.steps} optimizer steps, {verdict.wall_seconds:.0f} s "
          f"-> {args.verdict}")
    for reason in verdict.reasons:
        print(f"  {reason}")
    return 0 if verdict.healthy else 1


def _train(args: argparse.Namespace) -> int:
    from components.training.train import train_model

    if bool(args.store) != bool(args.run_id):
        raise UserError("--store and --run-id go together (checkpoints live at <store>/runs/<run-id>/checkpoints/)")
    weights, model = _weights_or_model(args.weights, args.model)
    config = config_from_flags(args, TrainConfig, model=model, weights=weights)
    check_settings(config)
    result = train_model(_dataset(args), args.out, config, store=args.store, run_id=args.run_id)
    print(f"train: {result.epochs_completed} epochs; best {result.best}; metrics {result.metrics_json}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from components.evaluation.evaluate import evaluate_model

    result = evaluate_model(args.weights, args.data, args.out, device=args.device)
    overall = result.overall
    print(f"evaluate: mAP50 {overall.map50:.3f}, mAP50-95 {overall.map50_95:.3f} -> {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the `pogona` parser."""
    sanity = subparsers.add_parser("sanity", help="short CPU training that must prove the data learnable; "
                                                  "exit 0 only when healthy")
    _add_data_options(sanity)
    add_field_flags(sanity, SanityConfig, user_settings(SanityConfig))
    add_field_flags(sanity, TrainConfig, ("weights", "model"))
    sanity.add_argument("--store", default="", help="the run's object store, whose weights/<model>.pt is the "
                                                    "default base weights (as `pogona train --store`)")
    sanity.add_argument("--verdict", type=Path, required=True, help="verdict JSON to write")
    sanity.set_defaults(handler=_sanity)

    train = subparsers.add_parser("train", help="multi-epoch training (CUDA by default), resumable from a store")
    _add_data_options(train)
    add_field_flags(train, TrainConfig, user_settings(TrainConfig))
    train.add_argument("--store", default="", help="object store for per-epoch checkpoints (with --run-id); its "
                                                   "weights/<model>.pt is the default base weights")
    train.add_argument("--run-id", default="", help="run id; a run started again with the same id resumes")
    train.add_argument("--out", type=Path, default=Path("train"), help="output folder")
    train.set_defaults(handler=_train)

    evaluate = subparsers.add_parser("evaluate", help="precision, recall, mAP overall and per modality")
    evaluate.add_argument("--weights", type=Path, required=True)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, default=Path("evaluation") / "evaluation.json")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (refused when CUDA is missing)")
    evaluate.set_defaults(handler=_evaluate)
