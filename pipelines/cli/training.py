"""`pogona sanity`, `pogona train`, `pogona evaluate`: doors onto components.sanity, .train and .evaluate.

Heavy imports (torch, ultralytics) happen inside the handlers so `pogona --help` stays fast.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from components.config import SanityConfig, TrainConfig
from components.errors import UserError


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
    from pipelines.steps import materialize

    return materialize(str(args.manifest))


def _weights_or_model(weights: str, model: str) -> tuple[str, str]:
    """`--weights yolo11n` names an architecture to build, not a checkpoint to load."""
    if weights and "://" not in weights and not Path(weights).suffix:
        return "", weights
    return weights, model


def _sanity(args: argparse.Namespace) -> int:
    from components.sanity import run_sanity

    config = SanityConfig(epochs=args.epochs, batch=args.batch, imgsz=args.imgsz, max_images=args.max_images)
    weights, model = _weights_or_model(args.weights, args.model)
    verdict = run_sanity(_dataset(args), args.verdict, config, weights=weights, model=model)
    print(f"sanity: {verdict.verdict} after {verdict.steps} optimizer steps, {verdict.wall_seconds:.0f} s "
          f"-> {args.verdict}")
    for reason in verdict.reasons:
        print(f"  {reason}")
    return 0 if verdict.healthy else 1


def _train(args: argparse.Namespace) -> int:
    from components.train import train_model

    if bool(args.store) != bool(args.run_id):
        raise UserError("--store and --run-id go together (checkpoints live at <store>/runs/<run-id>/checkpoints/)")
    weights, model = _weights_or_model(args.weights, args.model)
    config = TrainConfig(model=model, weights=weights, epochs=args.epochs, patience=args.patience,
                         imgsz=args.imgsz, batch=args.batch, device=args.device)
    result = train_model(_dataset(args), args.out, config, store=args.store, run_id=args.run_id)
    print(f"train: {result.epochs_completed} epochs; best {result.best}; metrics {result.metrics_json}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from components.evaluate import evaluate_model

    result = evaluate_model(args.weights, args.data, args.out, device=args.device)
    overall = result["overall"]
    print(f"evaluate: mAP50 {overall['map50']:.3f}, mAP50-95 {overall['map50_95']:.3f} -> {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the `pogona` parser."""
    sanity_defaults = {f.name: f.default for f in fields(SanityConfig)}
    train_defaults = {f.name: f.default for f in fields(TrainConfig)}

    sanity = subparsers.add_parser("sanity", help="short CPU training that must prove the data learnable; "
                                                  "exit 0 only when healthy")
    _add_data_options(sanity)
    sanity.add_argument("--epochs", type=int, default=sanity_defaults["epochs"])
    sanity.add_argument("--batch", type=int, default=sanity_defaults["batch"])
    sanity.add_argument("--imgsz", type=int, default=sanity_defaults["imgsz"])
    sanity.add_argument("--max-images", type=int, default=sanity_defaults["max_images"],
                        help="cap on the stratified train+val subset")
    sanity.add_argument("--weights", default="", help="base weights (s3://..., file path) or a model name")
    sanity.add_argument("--model", default=train_defaults["model"], help="architecture built when no weights")
    sanity.add_argument("--verdict", type=Path, required=True, help="verdict JSON to write")
    sanity.set_defaults(handler=_sanity)

    train = subparsers.add_parser("train", help="multi-epoch training (CUDA by default), resumable from a store")
    _add_data_options(train)
    train.add_argument("--model", default=train_defaults["model"])
    train.add_argument("--weights", default="", help="base weights: s3://.../<model>.pt or a file path")
    train.add_argument("--epochs", type=int, default=train_defaults["epochs"])
    train.add_argument("--patience", type=int, default=train_defaults["patience"])
    train.add_argument("--imgsz", type=int, default=train_defaults["imgsz"])
    train.add_argument("--batch", type=float, default=train_defaults["batch"],
                       help="images per batch, or a fraction (<1) of GPU memory")
    train.add_argument("--device", default=train_defaults["device"],
                       help="cuda, a GPU list such as 0,1,2,3 (DDP), cpu, or mps (never chosen automatically)")
    train.add_argument("--store", default="", help="object store for per-epoch checkpoints (with --run-id)")
    train.add_argument("--run-id", default="", help="run id; a run started again with the same id resumes")
    train.add_argument("--out", type=Path, default=Path("train"), help="output folder")
    train.set_defaults(handler=_train)

    evaluate = subparsers.add_parser("evaluate", help="precision, recall, mAP overall and per modality")
    evaluate.add_argument("--weights", type=Path, required=True)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, default=Path("evaluation") / "evaluation.json")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (refused when CUDA is missing)")
    evaluate.set_defaults(handler=_evaluate)
