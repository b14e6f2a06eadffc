"""`pogona sanity | train | evaluate` as a user runs them: exit codes, one-line errors, the files they write."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.config import SanityConfig, TrainConfig, user_settings
from components.data.validate import validate_dataset
from components.runtime.yolo_env import offline_ultralytics
from pipelines.cli import build_parser, main
from pipelines.cli.flags import config_from_flags

REPO = Path(__file__).resolve().parents[2]
EPOCH_KEYS = {"box_loss", "cls_loss", "dfl_loss", "precision", "recall", "map50", "map50_95"}


@pytest.mark.parametrize("command, config", [("train", TrainConfig), ("sanity", SanityConfig)])
def test_train_and_sanity_take_each_setting_of_their_configuration_as_a_typed_flag(command, config):
    required = ["--data", "d", *(["--verdict", "v.json"] if command == "sanity" else [])]
    assert config_from_flags(build_parser().parse_args([command, *required]), config) == config()
    changed = {name: "x" if isinstance(value, str) else value + 1 for name in user_settings(config)
               for value in [getattr(config(), name)]}
    flags = [text for name, value in changed.items() for text in (f"--{name.replace('_', '-')}", str(value))]
    assert config_from_flags(build_parser().parse_args([command, *required, *flags]), config) == config(**changed)


@pytest.mark.slow
def test_sanity_from_a_snapshot_manifest_is_healthy_on_the_demo_data(demo_dataset_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture):
    manifest = tmp_path / "manifest.json"
    assert validate_dataset(str(demo_dataset_dir), manifest).usable
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "cache"))
    verdict_path = tmp_path / "sanity" / "verdict.json"
    code = main(["sanity", "--manifest", str(manifest), "--weights", "yolo11n", "--imgsz", "128", "--batch", "4",
                 "--max-images", "80", "--verdict", str(verdict_path)])
    verdict = json.loads(verdict_path.read_text())
    assert code == 0, verdict["reasons"]
    assert verdict["verdict"] == "healthy" and verdict["device"] == "cpu" and verdict["steps"] > 0
    assert len(verdict["epochs"]) == 3 and all(set(epoch) == EPOCH_KEYS for epoch in verdict["epochs"])
    assert any((tmp_path / "cache").rglob("*.jpg"))  # trained on the materialized snapshot
    assert "sanity: healthy" in capsys.readouterr().out


@pytest.mark.slow
def test_sanity_exits_1_on_a_dead_run(empty_label_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    verdict_path = tmp_path / "verdict.json"
    code = main(["sanity", "--data", str(empty_label_dataset / "data.yaml"), "--weights", "yolo11n", "--imgsz", "64",
                 "--verdict", str(verdict_path)])
    assert code == 1 and json.loads(verdict_path.read_text())["verdict"] == "dead"
    assert "sanity: dead" in capsys.readouterr().out


@pytest.mark.slow
def test_sanity_and_training_start_from_the_weights_staged_in_their_store(demo_dataset_dir: Path, tmp_path: Path):
    YOLO = offline_ultralytics().YOLO

    store, checkpoint = tmp_path / "store", tmp_path / "yolo11n.pt"
    YOLO("yolo11n.yaml").save(checkpoint)
    assert main(["weights", "stage", str(checkpoint), "--store", str(store)]) == 0
    verdict_path = tmp_path / "verdict.json"
    sanity = main(["sanity", "--data", str(demo_dataset_dir), "--model", "yolo11n", "--store", str(store),
                   "--epochs", "2", "--imgsz", "64", "--max-images", "16", "--verdict", str(verdict_path)])
    assert main(["train", "--data", str(demo_dataset_dir), "--model", "yolo11n", "--store", str(store), "--run-id",
                 "r", "--epochs", "1", "--imgsz", "64", "--batch", "8", "--device", "cpu",
                 "--out", str(tmp_path / "train")]) == 0
    verdict = json.loads(verdict_path.read_text())
    trained = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert sanity == (0 if verdict["verdict"] == "healthy" else 1)  # the exit code says what the verdict says
    assert verdict["base_weights"]["source"] == "store" and verdict["base_weights"]["pretrained"] is True
    assert trained["base_weights"]["uri"] == verdict["base_weights"]["uri"] and trained["base_weights"]["pretrained"]
    assert any("from pretrained weights" in reason for reason in verdict["reasons"])  # judged as pretrained


@pytest.mark.parametrize("extra, message", [
    ([], "CUDA is not available on this machine"),
    (["--device", "cpu", "--store", "file:///tmp/x"], "--store and --run-id go together"),
    (["--device", "cpu", "--weights", "yolo11s.pt"], "would download it from the internet"),
])
def test_train_refuses_with_one_line_and_exit_2(extra: list[str], message: str, demo_dataset_dir: Path,
                                                tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the default device cuda, on a machine without
    code = main(["train", "--data", str(demo_dataset_dir), "--out", str(tmp_path / "train"), *extra])
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert code == 2 and last_line.startswith("pogona train: error: ") and message in last_line
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


def test_evaluate_names_missing_weights(demo_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["evaluate", "--weights", str(tmp_path / "best.pt"), "--data", str(demo_dataset_dir)]) == 2
    assert "best.pt do not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_writes_the_json_it_summarizes(trained_run: Path, demo_dataset_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture):
    out = tmp_path / "evaluation" / "evaluation.json"
    assert main(["evaluate", "--weights", str(trained_run / "weights" / "best.pt"), "--data",
                 str(demo_dataset_dir), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["by_modality"]) == {"thermal", "visible"}
    assert f"mAP50 {result['overall']['map50']:.3f}" in capsys.readouterr().out


# A bad setting must be refused before any work: the data folder does not exist and torch is never imported.
REFUSAL_PROBE = """
import json, sys
from pipelines.cli import main
code = main(json.loads(sys.argv[1]))
print(json.dumps([code, "torch" in sys.modules]))
"""


@pytest.mark.parametrize("command, flags, line", [
    ("train", ["--epochs", "0"], "epochs 0 is out of range: a whole number >= 1"),
    ("train", ["--epochs", "-1"], "epochs -1 is out of range: a whole number >= 1"),
    ("train", ["--imgsz", "31"], "imgsz 31 is out of range: a multiple of the model's stride 32"),
    ("train", ["--patience", "-2"], "patience -2 is out of range: a whole number >= 0"),
    ("train", ["--batch", "0"], "batch 0 is out of range: a whole number >= 1, or a fraction of GPU memory"),
    ("train", ["--batch", "2.5"], "batch 2.5 is out of range"),
    ("train", ["--device", "gpu0"], "device 'gpu0' is not one of cpu, mps, cuda, cuda:N or a GPU list"),
    ("train", ["--model", "yolo12n"], "model 'yolo12n' is not one of yolo11n"),
    ("sanity", ["--epochs", "0"], "sanity epochs 0 is out of range: a whole number >= 1"),
    ("sanity", ["--batch", "-8"], "sanity batch -8 is out of range"),
    ("sanity", ["--imgsz", "100"], "sanity imgsz 100 is out of range: a multiple of the model's stride 32"),
    ("sanity", ["--max-images", "0"], "sanity max_images 0 is out of range"),
    ("sanity", ["--min-loss-drop", "1.5"], "sanity min_loss_drop 1.5 is out of range: a fraction between 0 and 1"),
    ("sanity", ["--min-map50", "-1"], "sanity min_map50 -1 is out of range"),
    ("sanity", ["--model", "x"], "model 'x' is not one of yolo11n"),
])
def test_a_bad_setting_exits_2_with_one_line_before_any_work(command: str, flags: list[str], line: str,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture):
    verdict = ["--verdict", str(tmp_path / "verdict.json")] if command == "sanity" else []
    code = main([command, "--data", str(tmp_path / "missing"), "--out" if command == "train" else "--store",
                 str(tmp_path / "out") if command == "train" else "", *verdict, *flags])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"pogona {command}: error: {line}")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_setting_is_refused_without_importing_torch():
    argv = ["train", "--data", "missing", "--epochs", "0"]
    result = subprocess.run([sys.executable, "-c", REFUSAL_PROBE, json.dumps(argv)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert json.loads(result.stdout) == [2, False], result.stderr
    assert result.stderr.splitlines()[-1] == "pogona train: error: epochs 0 is out of range: a whole number >= 1"
