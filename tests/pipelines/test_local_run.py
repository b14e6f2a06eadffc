"""The whole pipeline through kfp.local on a tiny demo dataset: the path `make demo` takes."""

import json
import os
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import kfp.local
import pytest
from kfp import dsl

from components.config import RunParameters, SanityConfig, TrainConfig, run_parameter_types, run_parameters_of
from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.errors import UserError
from components.storage import open_store
from pipelines.cli import build_parser, main
from components.metrics.artifacts import Evaluation
from pipelines.local import LocalRun, _docker_runner, run_local, summary_table
from pipelines.pipeline import run_signature, settings_of

TINY = dict(model="yolo11n", epochs=2, patience=2, imgsz=96, batch=16.0, sanity_epochs=3, sanity_imgsz=96,
            sanity_max_images=80, sanity_min_loss_drop=0.0, min_map50=0.0, export_formats="onnx")


@pytest.fixture(scope="module")
def local_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("local")
    dataset = root / "dataset"
    generate_demo_dataset(str(dataset), DemoSpec(images=80, size=96), progress=False)
    return dataset, root / "store"


@pytest.mark.slow
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


@dsl.component(base_image="python:3.11")
def _received(model: str, base_weights_uri: str, epochs: int, patience: int, imgsz: int, batch: float,
              training_device: str, sanity_epochs: int, sanity_batch: int, sanity_imgsz: int, sanity_max_images: int,
              sanity_min_loss_drop: float, sanity_min_map50: float, out: str):
    import json
    from dataclasses import asdict
    from pathlib import Path

    from components.config import SanityConfig, TrainConfig, config_from_run

    arguments = locals()
    Path(out).write_text(json.dumps([asdict(config_from_run(TrainConfig, arguments)),
                                     asdict(config_from_run(SanityConfig, arguments))]))


@dsl.component(base_image="python:3.11")
def _yes() -> bool:
    return True


@pytest.mark.slow
def test_kfp_local_hands_a_branch_step_the_configurations_the_run_parameters_set(tmp_path):
    """kfp.local hands a step inside a branch each setting the run changed, as the pipeline passes them."""
    names = [*run_parameters_of(TrainConfig), *run_parameters_of(SanityConfig)]
    arguments = {name: TINY.get(name, getattr(RunParameters(), name)) for name in names}
    signature, _ = run_signature(RunParameters())
    out = tmp_path / "received.json"

    def configurations(*values) -> None:  # as the pipeline: one channel per run parameter, in order
        run = SimpleNamespace(**dict(zip(signature.parameters, values)))
        with dsl.If(_yes().output == True):  # noqa: E712 (KFP condition), as the training steps sit in one
            _received(**settings_of(TrainConfig, run), **settings_of(SanityConfig, run), out=str(out))

    configurations.__signature__ = signature
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    dsl.pipeline(configurations)(**arguments)
    received = json.loads(out.read_text())
    expected = [asdict(config(**{field: arguments[name] for name, field in run_parameters_of(config).items()}))
                for config in (TrainConfig, SanityConfig)]
    assert received == expected


def test_the_runner_is_subprocess_unless_docker_is_asked_for_and_nothing_else_is_taken():
    parser = build_parser()
    assert parser.parse_args(["run", "--local", "--demo"]).runner == "subprocess"
    assert parser.parse_args(["run", "--local", "--demo", "--runner", "docker"]).runner == "docker"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--local", "--runner", "podman"])
    with pytest.raises(UserError, match="--runner 'kubernetes': one of subprocess, docker"):
        run_local(dataset="unused", runner="kubernetes")


def test_docker_steps_see_local_folders_at_their_own_paths_as_the_caller_in_group_0(tmp_path, monkeypatch):
    """The store and dataset URIs mean the same inside the containers; files land owned by the caller."""
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    store, dataset = tmp_path / "store", tmp_path / "data"
    runner = _docker_runner([store.as_uri(), str(dataset)])
    mounts = {(mount["Source"], mount["Target"]) for mount in runner.container_run_args["mounts"]}
    assert mounts == {(str(store), str(store)), (str(dataset), str(dataset))}
    assert runner.container_run_args["user"] == f"{os.getuid()}:0"
    assert runner.container_run_args["network_mode"] == "none"  # nothing beyond this machine to reach
    assert runner.container_run_args["environment"] == {"AWS_REGION": "eu-west-1"}
    remote = _docker_runner([store.as_uri(), "s3://bucket/datasets/demo"])
    assert remote.container_run_args["network_mode"] == "host"
    assert [mount["Source"] for mount in remote.container_run_args["mounts"]] == [str(store)]


def test_the_summary_of_a_dataset_without_modalities_has_the_overall_row_only(tmp_path: Path):
    """metrics.json as publish writes it from such an evaluation: an empty by_modality."""
    evaluation = Evaluation.from_json({"overall": {"precision": 0.9, "recall": 0.8, "map50": 0.85, "map50_95": 0.6},
                                       "by_modality": {}}, "evaluation.json")
    run = LocalRun("plain", str(tmp_path / "store"), 12.0, sanity_verdict="healthy", metrics={
        "metrics": evaluation.overall.to_json(), "by_modality": evaluation.to_json()["by_modality"]})
    rows = summary_table(run).splitlines()
    header = next(index for index, line in enumerate(rows) if "mAP50-95" in line)
    assert rows[header + 1].split() == ["overall", "0.900", "0.800", "0.850", "0.600"] and rows[header + 2] == ""


@pytest.mark.slow
@pytest.mark.parametrize("setting, message", [
    ({"epochs": 0}, "epochs 0 is out of range: a whole number >= 1"),
    ({"sanity_imgsz": 100}, "sanity imgsz 100 is out of range: a multiple of the model's stride 32"),
])
def test_a_setting_out_of_range_fails_the_run_at_the_decide_step_before_the_sanity_gate(
        local_pipeline, tmp_path, capfd, setting, message):
    dataset, store_dir = local_pipeline
    with pytest.raises(UserError, match="decide-training"):
        run_local(store=str(store_dir), dataset=str(dataset), overrides={**TINY, **setting}, run_id="refused",
                  work_dir=tmp_path / "kfp")
    logs = capfd.readouterr()
    assert f"pogona decide-training: error: {message}" in logs.out + logs.err and "Traceback" not in logs.out + logs.err
    tasks_with_artifacts = {path.name for path in (tmp_path / "kfp").glob("*/*") if path.is_dir()}
    assert tasks_with_artifacts == {"validate-dataset"}  # the sanity gate would have written its verdict
    assert not any(open_store(str(store_dir)).list("runs/refused/"))


@pytest.mark.slow
def test_pogona_run_local_demo_through_its_cli_entry(tmp_path, monkeypatch, capsys):
    """`make demo`'s command, at test scale: the demo dataset is made smaller first (--demo reuses one it finds)."""
    monkeypatch.chdir(tmp_path)  # the kfp.local work dir, .pogona/kfp-local, lands here
    store = tmp_path / "store"
    assert main(["dataset", "demo", "--out", str(store / "datasets" / "demo"), "--images", "80", "--size", "96"]) == 0
    tiny = ["--epochs", "1", "--patience", "1", "--imgsz", "96", "--sanity-epochs", "3", "--sanity-imgsz", "96",
            "--sanity-max-images", "80", "--sanity-min-loss-drop", "0", "--min-map50", "0", "--export-formats", "onnx"]
    capsys.readouterr()
    assert main(["run", "--local", "--demo", "--store", str(store), "--run-id", "demo-1", *tiny]) == 0
    table = capsys.readouterr().out
    assert "demo-1" in table and "sanity verdict" in table and "healthy" in table
    published = open_store(str(store))
    assert published.get_json("models/pogona-head/production.json")["run_id"] == "demo-1"
    results = published.get_bytes("runs/demo-1/train/results.csv").decode().splitlines()
    assert len(results) == 2  # the header and the one epoch asked for
    assert (tmp_path / ".pogona" / "kfp-local").is_dir()
