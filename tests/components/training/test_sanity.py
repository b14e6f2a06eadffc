"""The CPU sanity gate on real (tiny) ultralytics runs: the seed's dead run, a NaN run, and the verdict rules."""

import json
import logging
from pathlib import Path

import pytest

from components.config import SanityConfig
from components.data.dataset import load_dataset
from components.training.deadrun import Verdict
from components.training.sanity import judge, run_sanity, stratified_subset
from components.runtime.yolo_env import offline_ultralytics

TINY = SanityConfig(epochs=3, batch=8, imgsz=64, max_images=80)
VERDICT_KEYS = {"verdict", "reasons", "steps", "wall_seconds", "device", "epochs", "base_weights"}


def _epoch(box: float, cls: float, dfl: float, map50: float = 0.0) -> dict[str, float]:
    return {"box_loss": box, "cls_loss": cls, "dfl_loss": dfl, "precision": 0.0, "recall": 0.0,
            "map50": map50, "map50_95": 0.0}


@pytest.mark.slow
def test_empty_labels_are_judged_dead_within_the_step_budget_and_stop_early(empty_label_dataset: Path,
                                                                             tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture):
    verdict_path = tmp_path / "verdict.json"
    with caplog.at_level(logging.WARNING, logger="pogona"):
        verdict = run_sanity(empty_label_dataset, verdict_path, TINY, model="yolo11n", workdir=tmp_path / "work",
                             store=str(tmp_path / "store"))
    assert verdict.verdict == "dead"
    assert 0 < verdict.steps <= 20
    assert verdict.epochs == []  # aborted inside epoch 1 of 3: no epoch reached its val run
    assert "box and DFL loss stayed exactly 0" in verdict.reasons[0]
    written = json.loads(verdict_path.read_text())
    assert set(written) == VERDICT_KEYS and written["verdict"] == "dead" and written["device"] == "cpu"
    # nothing staged in the store, nothing baked: the gate, like training, starts from scratch and says so
    assert written["base_weights"]["source"] == "scratch" and written["base_weights"]["pretrained"] is False
    assert any("yolo11n from scratch" in message for message in caplog.messages)


@pytest.mark.slow
def test_a_nan_loss_is_judged_dead(demo_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    offline_ultralytics()
    from ultralytics.utils.loss import v8DetectionLoss

    real_loss = v8DetectionLoss.__call__

    def nan_loss(self, *args, **kwargs):  # fault injection: the criterion starts returning NaN
        loss, items = real_loss(self, *args, **kwargs)
        nan = float("nan")  # the loss items are a dict in newer ultralytics releases, a tensor in older ones
        return loss * nan, ({name: value * nan for name, value in items.items()} if isinstance(items, dict)
                            else items * nan)

    monkeypatch.setattr(v8DetectionLoss, "__call__", nan_loss)
    verdict = run_sanity(demo_dataset_dir, tmp_path / "verdict.json", TINY, model="yolo11n",
                         workdir=tmp_path / "work")
    assert verdict.verdict == "dead" and verdict.steps <= 1
    assert "NaN or infinite" in verdict.reasons[0]


def test_subset_is_capped_and_keeps_every_split_and_modality(demo_dataset_dir: Path):
    subset = stratified_subset(load_dataset(demo_dataset_dir), max_images=20)
    assert sum(len(images) for images in subset.values()) == 20
    for split, images in subset.items():
        assert {image.parent.name for image in images} == {"thermal", "visible"}, split
        assert all(f"/images/{split}/" in str(image) for image in images)
    assert len(subset["train"]) == 16  # the dataset's 80/20 split is kept


def test_verdict_rules():
    config = SanityConfig(min_loss_drop=0.05, min_map50=0.5)
    assert judge([_epoch(1.4, 1.3, 1.1), _epoch(1.2, 0.7, 1.0)], config, pretrained=False)[0] is Verdict.HEALTHY
    verdict, reasons = judge([_epoch(1.4, 1.3, 1.1), _epoch(1.4, 1.3, 1.05)], config, pretrained=False)
    assert verdict is Verdict.NOT_LEARNING and "fell only 1.3%" in reasons[0]
    verdict, reasons = judge([_epoch(1.4, 1.3, 1.1), _epoch(1.2, 0.7, 1.0, map50=0.3)], config, pretrained=True)
    assert verdict is Verdict.NOT_LEARNING and "mAP50 0.300" in reasons[0]
    verdict, reasons = judge([_epoch(1.4, 1.3, 1.1), _epoch(0.0, 0.7, 0.0)], config, pretrained=False)
    assert verdict is Verdict.DEAD and "epoch 2 box_loss=0.0" in reasons[0]


def test_subset_of_a_dataset_without_modalities_keeps_each_split_s_share(no_modality_dataset_dir: Path):
    subset = stratified_subset(load_dataset(no_modality_dataset_dir), max_images=20)
    assert {split: len(images) for split, images in subset.items()} == {"train": 16, "val": 4}
    assert all(f"/images/{split}/frame_" in str(image) for split, images in subset.items() for image in images)
