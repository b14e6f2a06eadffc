"""evaluation.json, exports.json and metrics.json as records: the same JSON back, older files, named errors."""

import json
from pathlib import Path

import pytest

from components.errors import UserError
from components.metrics.artifacts import Evaluation, Exports
from components.training.outputs import TrainingMetrics

SCORES = {"precision": 0.9, "recall": 0.8, "map50": 0.85, "map50_95": 0.6}
EVALUATION = {  # as evaluate_model writes it
    "weights": "/run/train/weights/best.pt", "imgsz": 96, "device": "cpu", "overall": SCORES,
    "by_modality": {"thermal": {**SCORES, "images": 12}, "visible": {**SCORES, "map50": 0.9, "images": 14}},
    "speed_ms": {"preprocess": 0.1, "inference": 4.2, "loss": 0.0, "postprocess": 0.3},
    "worst_images": {"thermal": [{"key": "images/val/thermal/a.jpg", "missed": 1, "false_detections": 2,
                                  "caption": "images/val/thermal/a.jpg: 1 of 2 heads missed, 2 false detections",
                                  "drawing": "worst/thermal-1.jpg"}], "visible": []},
    "splits": {"test": SCORES},
}
EXPORTS = {  # as export_model writes it
    "weights": "best.pt", "data": "/x/data.yaml", "imgsz": 96, "device": "cpu", "models": [
        {"format": "onnx", "file": "/x/best.onnx", "size_bytes": 10, "precision": "fp32",
         "device": "onnxruntime-cpu", "map50": 0.9, "map50_95": 0.6, "latency_ms": 4.0},
        {"format": "int8", "file": "/x/best.int8.onnx", "size_bytes": 4, "precision": "int8",
         "device": "onnxruntime-cpu", "map50": 0.89, "map50_95": 0.59, "latency_ms": 2.0, "calibration_images": 64},
        {"format": "engine", "file": "/x/best.engine", "size_bytes": 20, "precision": "fp16", "device": "cuda:0",
         "map50": None, "map50_95": None, "latency_ms": None}]}
TRAINING = {  # as write_outputs writes it
    "metrics": {"precision": 0.9, "map50": 0.8}, "best_epoch": 3, "epochs_completed": 4, "epochs_requested": 5,
    "early_stopped": True, "device": "0", "config": {"epochs": 5, "imgsz": 96}, "hyperparameters": {"lr0": 0.01},
    "base_weights": {"path": "/c/yolo11n.pt", "source": "store", "uri": "s3://b/weights/yolo11n.pt",
                     "pretrained": True},
    "batch_plan": {"batch": 16, "batches_per_epoch": 4, "accumulate": 4, "optimizer_steps_per_epoch": 1.0,
                   "warmup_iterations": 100, "warmup_epochs": 3.0, "warmup_share": 0.5, "reason": "given"},
}


@pytest.mark.parametrize(("record", "document"), [(Evaluation, EVALUATION), (Exports, EXPORTS),
                                                  (TrainingMetrics, TRAINING)])
def test_a_file_reads_into_its_record_and_writes_back_the_same_json(record: type, document: dict) -> None:
    parsed = record.from_json(json.loads(json.dumps(document)), "x.json")
    assert json.dumps(parsed.to_json()) == json.dumps(document)  # the same keys, values and order


@pytest.mark.parametrize(("record", "document"), [
    (Evaluation, {"overall": {"map50": 0.9, "map50_95": 0.6}, "by_modality": {"thermal": {"map50_95": 0.5}}}),
    (TrainingMetrics, {"metrics": {"map50": 0.9}, "best_epoch": 3}),
])
def test_files_of_older_runs_load_and_keep_only_what_they_held(record: type, document: dict) -> None:
    assert record.from_json(document, "old.json").to_json() == {
        **document, **({"base_weights": None, "batch_plan": None} if record is TrainingMetrics else {})}


def test_an_older_export_loads_with_what_it_lacks_unknown() -> None:
    exports = Exports.from_json({"imgsz": 640, "models": [{"format": "onnx", "file": "best.onnx", "map50_95": 0.5}]},
                                "old.json")
    assert exports.device is None and exports.model("onnx").map50_95 == 0.5 and exports.model("onnx").latency_ms is None


def test_an_evaluation_without_drawings_has_no_worst_images() -> None:
    evaluation = Evaluation.from_json({"overall": SCORES}, "old.json")
    assert evaluation.worst_images is None and evaluation.overall.values() == SCORES


@pytest.mark.parametrize("text", ["[1, 2]", '{"overall": 3}', '{"by_modality": {"thermal": [1]}}',
                                  '{"worst_images": {"thermal": [{"key": "a"}]}}'])
def test_a_file_of_another_shape_is_refused_naming_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "evaluation.json"
    path.write_text(text)
    with pytest.raises(UserError, match=f"^{path}: not an evaluation"):
        Evaluation.load(path)


def test_missing_and_broken_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"{tmp_path / 'exports.json'}: no such exports file"):
        Exports.load(tmp_path / "exports.json")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.json").write_text('{"base_weights": {"path": "x"}}')
    with pytest.raises(UserError, match=f"{tmp_path / 'train' / 'metrics.json'}: not training metrics"):
        TrainingMetrics.beside(tmp_path / "train" / "results.csv")
    assert TrainingMetrics.beside(tmp_path / "results.csv") is None  # a bare ultralytics run has none
