"""Evaluation of the tiny trained run: agreement with ultralytics' validator, per-modality figures, plots."""

import json
import shutil
from pathlib import Path

import pytest

from components.errors import UserError
from components.evaluate import evaluate_model
from components.snapshot import parse_key
from components.train import YOLO, image_modality, load_dataset

KEYS = {"precision", "recall", "map50", "map50_95"}


@pytest.fixture(scope="module")
def weights(demo_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that finds some heads (the shared 64 px run finds none, and zeros agree with anything).

    nbs=8 steps the optimizer every batch, so a few seconds of training give detections.
    """
    out = tmp_path_factory.mktemp("evaluated") / "train"
    data = load_dataset(demo_dataset_dir).write_yaml(out.parent / "data.yaml")
    YOLO("yolo11n.yaml").train(data=str(data), epochs=4, imgsz=96, batch=8, nbs=8, lr0=0.002, optimizer="AdamW",
                               device="cpu", amp=False, workers=0, seed=42, save_dir=str(out), plots=False)
    return out / "weights" / "best.pt"


@pytest.fixture(scope="module")
def evaluation(weights: Path, demo_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evaluation") / "evaluation.json"
    evaluate_model(weights, demo_dataset_dir, out)
    return out


def test_overall_figures_agree_with_ultralytics_val(evaluation: Path, weights: Path, demo_dataset_dir: Path,
                                                    tmp_path: Path):
    data = load_dataset(demo_dataset_dir).write_yaml(tmp_path / "data.yaml")
    reference = YOLO(str(weights)).val(data=str(data), imgsz=96, device="cpu",
                                                                   project=str(tmp_path), plots=False)
    overall = json.loads(evaluation.read_text())["overall"]
    assert overall["recall"] > 0  # a trained model finds something; equal zeros would prove nothing
    assert overall == pytest.approx({"precision": reference.box.mp, "recall": reference.box.mr,
                                     "map50": reference.box.map50, "map50_95": reference.box.map}, abs=1e-9)


def test_per_modality_figures_cover_each_modality_on_its_own_images(evaluation: Path, demo_dataset_dir: Path):
    result = json.loads(evaluation.read_text())
    assert result["imgsz"] == 96  # the size the model was trained at, read from its checkpoint
    assert set(result["by_modality"]) == {"thermal", "visible"}
    for modality, scores in result["by_modality"].items():
        assert set(scores) == KEYS | {"images"}
        assert all(0.0 <= scores[key] <= 1.0 for key in KEYS), (modality, scores)
        assert scores["images"] == len(list((demo_dataset_dir / "images" / "val" / modality).glob("*.jpg")))
    assert result["speed_ms"]["inference"] > 0
    assert "splits" not in result  # the demo dataset has no test split


def test_plots_are_written_next_to_the_json(evaluation: Path):
    for name in ("pr_curve.png", "confusion_matrix.png"):
        assert (evaluation.parent / name).read_bytes()[:4] == b"\x89PNG"


def test_a_test_split_is_evaluated_on_its_own_images(weights: Path, demo_dataset_dir: Path, tmp_path: Path):
    data = tmp_path / "dataset"
    shutil.copytree(demo_dataset_dir, data, ignore=shutil.ignore_patterns("*.cache"))
    for kind in ("images", "labels"):
        shutil.copytree(data / kind / "val" / "visible", data / kind / "test" / "visible")
    result = evaluate_model(weights, data, tmp_path / "evaluation.json")
    assert set(result["splits"]) == {"test"}  # val is the overall figures
    assert result["splits"]["test"] == pytest.approx({key: result["by_modality"]["visible"][key] for key in KEYS})


def test_images_are_grouped_by_modality_exactly_as_validation_counts_them(tmp_path: Path):
    split = tmp_path / "images" / "val"
    names = ("thermal/a.jpg", "visible/night/b.jpg", "thermal_c.jpg", "thermalcam_d.jpg", "e.jpg")
    counted = {name: parse_key(f"images/val/{name}").modality for name in names}
    assert counted == {"thermal/a.jpg": "thermal", "visible/night/b.jpg": "visible", "thermal_c.jpg": "thermal",
                       "thermalcam_d.jpg": "unknown", "e.jpg": "unknown"}
    assert {name: image_modality(split / name, split) for name in names} == counted


def test_missing_weights_are_refused_naming_them(demo_dataset_dir: Path, tmp_path: Path):
    with pytest.raises(UserError, match=f"weights {tmp_path / 'best.pt'} do not exist"):
        evaluate_model(tmp_path / "best.pt", demo_dataset_dir, tmp_path / "evaluation.json")
    assert not (tmp_path / "evaluation.json").exists()
