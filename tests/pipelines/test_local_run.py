"""The whole pipeline through kfp.local on a tiny demo dataset: the path `make demo` takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import RunParameters, run_parameter_types
from components.demo_dataset import DemoSpec, generate_demo_dataset
from components.storage import open_store
from pipelines.cli import build_parser
from pipelines.local import run_local, summary_table

TINY = dict(model="yolo11n", epochs=2, patience=2, imgsz=96, batch=16.0, sanity_epochs=3, sanity_imgsz=96,
            sanity_max_images=80, sanity_min_loss_drop=0.0, min_map50=0.0, export_formats="onnx")


@pytest.fixture(scope="module")
def local_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("local")
    dataset = root / "dataset"
    generate_demo_dataset(str(dataset), DemoSpec(images=80, size=96), progress=False)
    return dataset, root / "store"


def test_local_run_publishes_a_complete_run_then_skips_an_unchanged_dataset(local_pipeline, tmp_path):
    dataset, store_dir = local_pipeline
    first = run_local(store=str(store_dir), dataset=str(dataset), overrides=TINY, run_id="first",
                      work_dir=tmp_path / "kfp")
    store = open_store(str(store_dir))
    keys = {info.key for info in store.list("runs/first/")}
    for expected in ("runs/first/train/weights/best.pt", "runs/first/train/results.csv",
                     "runs/first/report/report.md", "runs/first/report/report.html", "runs/first/metrics.json",
                     "runs/first/manifest.json", "runs/first/sanity/verdict.json"):
        assert expected in keys, f"{expected} missing from {sorted(keys)}"
    champion = store.get_json("models/pogona-head/production.json")
    assert champion["run_id"] == "first"
    assert not first.skipped
    table = summary_table(first)
    assert "sanity verdict" in table and "healthy" in table and "thermal" in table and "visible" in table

    second = run_local(store=str(store_dir), dataset=str(dataset), overrides=TINY, run_id="second",
                       work_dir=tmp_path / "kfp")
    assert second.skipped
    assert not any(store.list("runs/second/"))
    assert store.get_json("models/pogona-head/production.json")["run_id"] == "first"
    assert "training skipped" in summary_table(second)


def test_pogona_run_takes_every_run_parameter_it_does_not_set_itself_as_a_typed_flag():
    args = build_parser().parse_args(["run", "--local", "--sanity-batch", "4", "--batch", "0.5",
                                      "--sanity-min-map50", "0.3", "--export-formats", ""])
    assert (args.sanity_batch, args.batch, args.sanity_min_map50, args.export_formats) == (4, 0.5, 0.3, "")
    flags = {name for name in vars(args) if name in run_parameter_types()}  # model_name, run_id: own flags
    assert flags == set(run_parameter_types()) - {"dataset_uri", "store_uri", "skip_if_unchanged",
                                                  "training_device", "num_gpus", "s3_secret_name"}
    assert args.model_name == RunParameters.model_name
