"""Evaluation of the tiny trained run: agreement with ultralytics' validator, per-modality figures, plots."""

import base64
import html
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from components.errors import UserError
from components.evaluation.evaluate import evaluate_model, modality_groups
from components.evaluation.failures import MIN_CONFIDENCE, Detection, ImageFailures, draw, find_failures, match
from components.reporting.report import write_report
from components.data.dataset import load_dataset
from components.runtime.yolo_env import offline_ultralytics

KEYS = {"precision", "recall", "map50", "map50_95"}


@pytest.fixture(scope="module")
def weights(demo_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that finds some heads (the shared 64 px run finds none, and zeros agree with anything).

    nbs=8 steps the optimizer every batch, so a few seconds of training give detections.
    """
    out = tmp_path_factory.mktemp("evaluated") / "train"
    data = load_dataset(demo_dataset_dir).write_yaml(out.parent / "data.yaml")
    offline_ultralytics().YOLO("yolo11n.yaml").train(data=str(data), epochs=4, imgsz=96, batch=8, nbs=8, lr0=0.002,
                                                     optimizer="AdamW", device="cpu", amp=False, workers=0, seed=42,
                                                     save_dir=str(out), plots=False)
    return out / "weights" / "best.pt"


@pytest.fixture(scope="module")
def evaluated(weights: Path, demo_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """evaluation.json, and how many images the model's forward passes saw while it was made."""
    out = tmp_path_factory.mktemp("evaluation") / "evaluation.json"
    return out, _evaluated_counting_images(weights, demo_dataset_dir, out)


@pytest.fixture(scope="module")
def evaluation(evaluated: tuple[Path, int]) -> Path:
    return evaluated[0]


def _evaluated_counting_images(weights: Path, data: Path, out: Path) -> int:
    """Evaluate, returning how many images the model's forward passes saw (the batches of 96 px images,
    letterboxed up to 128 by the validator, not the 32 px probes with which ultralytics measures FLOPs)."""
    import torch

    seen = []

    def count(module: torch.nn.Module, args: tuple, output: object) -> None:
        if type(module).__name__ == "DetectionModel" and isinstance(args[0], torch.Tensor) \
                and min(args[0].shape[2:]) >= 96:
            seen.append(args[0].shape[0])

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        evaluate_model(weights, data, out)
    finally:
        hook.remove()
    return sum(seen)


@pytest.mark.slow
def test_each_validation_image_is_predicted_once_per_validator_pass(evaluated: tuple[Path, int],
                                                                   demo_dataset_dir: Path):
    """The overall pass and the per-modality passes; the worst images come from the former, not a third pass."""
    _, predicted = evaluated
    assert predicted == 2 * len(load_dataset(demo_dataset_dir).images("val"))


@pytest.mark.slow
def test_the_worst_images_are_those_predicting_each_image_alone_finds(evaluation: Path, weights: Path,
                                                                     demo_dataset_dir: Path):
    """The validator's batched, letterboxed passes find what `predict` finds on each image by itself."""
    model, dataset = offline_ultralytics().YOLO(str(weights)), load_dataset(demo_dataset_dir)
    predicted = {}
    for image in dataset.images("val"):
        boxes = model.predict(str(image), imgsz=96, conf=MIN_CONFIDENCE, device="cpu", verbose=False)[0].boxes
        predicted[image.resolve()] = [(int(cls), tuple(box), confidence) for cls, box, confidence in
                                      zip(boxes.cls.tolist(), boxes.xyxyn.tolist(), boxes.conf.tolist())]
    expected: dict[str, list[tuple]] = {}
    for failures in find_failures(predicted, dataset):
        shown = expected.setdefault(failures.modality, [])
        if len(shown) < 3:
            shown.append((failures.key, sum(failures.missed), sum(not d.correct for d in failures.detections),
                          failures.caption()))
    worst = json.loads(evaluation.read_text())["worst_images"]
    assert any(expected.values())
    assert {modality: [(r["key"], r["missed"], r["false_detections"], r["caption"]) for r in records]
            for modality, records in worst.items()} == expected


@pytest.mark.slow
def test_overall_figures_agree_with_ultralytics_val(evaluation: Path, weights: Path, demo_dataset_dir: Path,
                                                    tmp_path: Path):
    data = load_dataset(demo_dataset_dir).write_yaml(tmp_path / "data.yaml")
    reference = offline_ultralytics().YOLO(str(weights)).val(data=str(data), imgsz=96, device="cpu",
                                                             project=str(tmp_path), plots=False)
    overall = json.loads(evaluation.read_text())["overall"]
    assert overall["recall"] > 0  # a trained model finds something; equal zeros would prove nothing
    assert overall == pytest.approx({"precision": reference.box.mp, "recall": reference.box.mr,
                                     "map50": reference.box.map50, "map50_95": reference.box.map}, abs=1e-9)


@pytest.mark.slow
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


@pytest.mark.slow
def test_plots_are_written_next_to_the_json(evaluation: Path):
    for name in ("pr_curve.png", "confusion_matrix.png"):
        assert (evaluation.parent / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_test_split_is_evaluated_on_its_own_images(weights: Path, demo_dataset_dir: Path, tmp_path: Path):
    data = tmp_path / "dataset"
    shutil.copytree(demo_dataset_dir, data, ignore=shutil.ignore_patterns("*.cache"))
    for kind in ("images", "labels"):
        shutil.copytree(data / kind / "val" / "visible", data / kind / "test" / "visible")
    result = evaluate_model(weights, data, tmp_path / "evaluation.json")
    assert set(result.splits) == {"test"}  # val is the overall figures
    assert result.splits["test"].values() == pytest.approx(result.by_modality["visible"].values())


@pytest.mark.slow
def test_the_device_is_recorded(evaluation: Path):
    assert json.loads(evaluation.read_text())["device"] == "cpu"


def test_cuda_evaluation_without_cuda_is_refused_first(demo_dataset_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    """Refused before the weights are even looked at (these do not exist), so nothing is loaded or written."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # a machine without CUDA, also on a GPU host
    with pytest.raises(UserError, match="device 'cuda' asks for CUDA, but CUDA is not available.*--device cpu"):
        evaluate_model(tmp_path / "best.pt", demo_dataset_dir, tmp_path / "evaluation" / "evaluation.json",
                       device="cuda")
    assert not (tmp_path / "evaluation").exists()


def test_several_gpus_are_refused_for_evaluation(demo_dataset_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a two-GPU node; refused before any GPU is used
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    with pytest.raises(UserError, match="names several GPUs.*cuda:N"):
        evaluate_model(tmp_path / "best.pt", demo_dataset_dir, tmp_path / "evaluation.json", device="0,1")


def test_missing_weights_are_refused_naming_them(demo_dataset_dir: Path, tmp_path: Path):
    with pytest.raises(UserError, match=f"weights {tmp_path / 'best.pt'} do not exist"):
        evaluate_model(tmp_path / "best.pt", demo_dataset_dir, tmp_path / "evaluation.json")
    assert not (tmp_path / "evaluation.json").exists()


def test_matching_counts_missed_heads_and_false_detections_as_map50_does():
    truth = [(0, (0.1, 0.1, 0.3, 0.3)), (0, (0.6, 0.6, 0.8, 0.8))]
    predictions = [(0, (0.11, 0.1, 0.31, 0.3), 0.9),  # finds the first head
                   (0, (0.1, 0.12, 0.3, 0.31), 0.6),  # the same head again: false
                   (0, (0.4, 0.0, 0.5, 0.1), 0.5)]  # nothing there: false
    missed, detections = match(truth, predictions)
    assert missed == [False, True]
    assert [(d.confidence, d.correct) for d in detections] == [(0.9, True), (0.6, False), (0.5, False)]


@pytest.mark.slow
def test_the_worst_validation_images_are_drawn_per_modality_worst_first(evaluation: Path, demo_dataset_dir: Path):
    worst = json.loads(evaluation.read_text())["worst_images"]
    assert set(worst) <= {"thermal", "visible"} and any(worst.values())
    for modality, records in worst.items():
        assert 1 <= len(records) <= 3
        errors = [r["missed"] + r["false_detections"] for r in records]
        assert errors == sorted(errors, reverse=True) and min(errors) > 0
        for record in records:
            assert record["key"].startswith(f"images/val/{modality}/")
            assert (demo_dataset_dir / record["key"]).is_file() and record["key"] in record["caption"]
            with Image.open(evaluation.parent / record["drawing"]) as drawing:
                assert drawing.format == "JPEG" and max(drawing.size) == 320


@pytest.mark.slow
def test_the_report_shows_the_worst_images_in_its_one_page(evaluation: Path, tmp_path: Path):
    worst = json.loads(evaluation.read_text())["worst_images"]
    result = write_report(Path(__file__).parents[1] / "fixtures" / "converged_early" / "results.csv", tmp_path,
                          evaluation=evaluation)
    page, markdown = result.html.read_text(), result.markdown.read_text()
    assert "<h2>Where the model fails</h2>" in page and "## Where the model fails" in markdown
    for records in worst.values():
        for record in records:
            assert html.escape(record["caption"]) in page and record["caption"] in markdown
            encoded = base64.b64encode((evaluation.parent / record["drawing"]).read_bytes()).decode()
            assert f"data:image/jpeg;base64,{encoded}" in page


def test_ground_truth_detections_and_false_detections_are_drawn_in_their_own_colours(tmp_path: Path):
    Image.new("RGB", (128, 96), (128, 128, 128)).save(tmp_path / "frame.jpg")
    failures = ImageFailures(tmp_path / "frame.jpg", "images/val/thermal/frame.jpg", "thermal",
                             truth=((0.1, 0.1, 0.4, 0.5), (0.55, 0.1, 0.9, 0.5)), missed=(True, False),
                             detections=(Detection((0.56, 0.1, 0.9, 0.5), 0.91, True),
                                         Detection((0.1, 0.6, 0.4, 0.95), 0.42, False)))
    with Image.open(io.BytesIO(draw(failures))) as drawing:
        assert drawing.size == (320, 240)
        pixel = drawing.convert("RGB").getpixel

        def dominant(x: float, y: float) -> int:
            return max(range(3), key=lambda channel: pixel((round(x * 320), round(y * 240)))[channel])

        assert dominant(0.1, 0.3) == 1  # missed head: green
        assert dominant(0.9, 0.3) == 2  # detection: blue (drawn over its ground truth's green)
        assert dominant(0.1, 0.8) == 0  # false detection: red
    assert failures.caption() == ("images/val/thermal/frame.jpg: 1 of 2 heads missed, 1 false detections "
                                  "(confidence 0.42)")


@pytest.mark.slow
def test_a_dataset_without_modalities_is_evaluated_overall_only(weights: Path, evaluation: Path,
                                                                no_modality_dataset_dir: Path, tmp_path: Path):
    """The demo's images without their modalities: one validator pass, the demo's overall figures, no group that
    repeats them, and the worst images of the whole split; the report shows no modality."""
    out = tmp_path / "evaluation" / "evaluation.json"
    predicted = _evaluated_counting_images(weights, no_modality_dataset_dir, out)
    assert predicted == len(load_dataset(no_modality_dataset_dir).images("val")) == 16
    result, demo = json.loads(out.read_text()), json.loads(evaluation.read_text())
    assert result["by_modality"] == {}
    assert result["overall"] == pytest.approx(demo["overall"], abs=1e-3) and result["overall"]["recall"] > 0
    assert list(result["worst_images"]) == ["overall"] and 1 <= len(result["worst_images"]["overall"]) <= 3
    assert all(r["key"].startswith("images/val/frame_") for r in result["worst_images"]["overall"])
    markdown = write_report(Path(__file__).parents[1] / "fixtures" / "converged_early" / "results.csv",
                            tmp_path / "report", evaluation=out).markdown.read_text()
    assert "## Where the model fails" in markdown and result["worst_images"]["overall"][0]["caption"] in markdown
    assert f"| map50_95 | {result['overall']['map50_95']:.3f} |" in markdown
    assert "modality" not in markdown.lower() and "unknown" not in markdown


def test_validation_images_are_grouped_by_modality_those_without_one_plainly(demo_dataset_dir: Path,
                                                                            no_modality_dataset_dir: Path,
                                                                            tmp_path: Path):
    assert modality_groups(load_dataset(no_modality_dataset_dir)) == {}
    mixed = tmp_path / "mixed"
    shutil.copytree(demo_dataset_dir, mixed, ignore=shutil.ignore_patterns("*.cache"))
    moved = sorted((mixed / "images" / "val" / "thermal").glob("*.jpg"))[0]
    shutil.move(moved, mixed / "images" / "val" / "IMG_0001.jpg")
    groups = modality_groups(load_dataset(mixed))
    assert {name: len(images) for name, images in groups.items()} == {
        "thermal": len(list((mixed / "images" / "val" / "thermal").glob("*.jpg"))),
        "visible": len(list((mixed / "images" / "val" / "visible").glob("*.jpg"))), "no modality": 1}
