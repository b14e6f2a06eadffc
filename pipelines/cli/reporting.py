"""`pogona report`, `pogona publish`, `pogona export`: thin doors onto components.reporting.report/publish/export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.config import PromotionConfig, RunParameters


def _report(args: argparse.Namespace) -> int:
    from components.reporting.report import find_run_files, write_report

    found = find_run_files(args.run)
    result = write_report(found.results, args.out or found.report_dir,
                          sanity=args.sanity or found.sanity, champion=args.champion,
                          evaluation=args.evaluation or found.evaluation, exports=args.exports or found.exports)
    print(result.assessment)
    for recommendation in result.recommendations:
        print(f"- {recommendation.action} ({recommendation.trigger})")
    print(f"wrote {result.markdown} and {result.html}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from components.publishing.publish import publish_run

    result = publish_run(args.run_dir, args.store, args.run_id, model_name=args.model_name,
                         promotion=PromotionConfig(min_map50=args.min_map50, min_margin_map50_95=args.min_margin))
    print(f"published {len(result.uploaded)} files to {result.run_uri}")
    print(f"{'promoted' if result.promoted else 'not promoted'}: {result.reason}")
    return 0


def default_export_dir(weights: Path) -> Path:
    """<work>/exports for <work>/train/weights/*.pt (where `pogona report <work>` looks), else <run dir>/exports."""
    run_dir = weights.parent.parent
    return (run_dir.parent if run_dir.name == "train" else run_dir) / "exports"


def _export(args: argparse.Namespace) -> int:
    from components.evaluation.export import export_model, parse_formats

    out = args.out or default_export_dir(args.weights)
    result = export_model(args.weights, args.data, out, parse_formats(args.formats), device=args.device)
    for model in result.models:
        print(json.dumps({"format": model.format, "file": model.file, "map50_95": model.map50_95,
                          "latency_ms": model.latency_ms}))
    print(f"wrote {out / 'exports.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the report, publish and export commands to the `pogona` parser."""
    defaults = PromotionConfig()

    report = subparsers.add_parser("report", help="write report.md and a self-contained report.html for a run")
    report.add_argument("run", type=Path, metavar="RUN_DIR|results.csv",
                        help="an ultralytics run dir, a pogona working dir, or a results.csv")
    report.add_argument("--out", type=Path, help="output folder (default: <run>/report)")
    report.add_argument("--sanity", type=Path, help="CPU sanity verdict.json to compare against")
    report.add_argument("--champion", type=Path, help="the current production.json to compare against")
    report.add_argument("--evaluation", type=Path, help="evaluation.json (per-modality table, PR curve)")
    report.add_argument("--exports", type=Path, help="exports.json (FP32 vs INT8 table)")
    report.set_defaults(handler=_report)

    publish = subparsers.add_parser("publish", help="upload a run, then promote it if it beats the champion")
    publish.add_argument("--run-dir", type=Path, required=True, help="pogona working dir or ultralytics run dir")
    publish.add_argument("--store", required=True, help="s3://bucket/prefix, file:///path or a folder")
    publish.add_argument("--run-id", required=True)
    publish.add_argument("--model-name", default=RunParameters.model_name, help="default: %(default)s")
    publish.add_argument("--min-map50", type=float, default=defaults.min_map50,
                         help=f"absolute mAP50 floor for promotion (default {defaults.min_map50})")
    publish.add_argument("--min-margin", type=float, default=defaults.min_margin_map50_95,
                         help="mAP50-95 the challenger must gain over the champion "
                              f"(default {defaults.min_margin_map50_95}; it must always be strictly better)")
    publish.set_defaults(handler=_publish)

    export = subparsers.add_parser("export", help="ONNX FP32 / INT8 (CPU) or TensorRT (GPU), each measured on val")
    export.add_argument("--weights", type=Path, required=True, help="a .pt file (e.g. train/weights/best.pt)")
    export.add_argument("--data", type=Path, required=True, help="data.yaml or the dataset folder holding it")
    export.add_argument("--formats", default="onnx,int8", help="comma-separated: onnx, int8, engine (CUDA only)")
    export.add_argument("--out", type=Path, help="output folder (default: <work>/exports for "
                        "<work>/train/weights/*.pt, else exports/ in the weights' run dir)")
    export.add_argument("--device", default="cpu", help="torch device ultralytics exports on: cpu, cuda or cuda:N "
                        "(ONNX and INT8 are scored on ONNX Runtime's CPU whatever it is)")
    export.set_defaults(handler=_export)
