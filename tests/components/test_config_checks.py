"""Settings outside their range are refused by the configuration's own check, one line naming the parameter."""

import pytest

from components.config import SanityConfig, TrainConfig, check_settings
from components.errors import UserError

BAD_TRAIN = [("epochs", 0, "epochs 0 is out of range: a whole number >= 1"),
             ("epochs", -1, "epochs -1 is out of range"),
             ("patience", -1, "patience -1 is out of range: a whole number >= 0"),
             ("imgsz", 31, "imgsz 31 is out of range: a multiple of the model's stride 32"),
             ("imgsz", 650, "imgsz 650 is out of range"),
             ("imgsz", 0, "imgsz 0 is out of range"),
             ("batch", 0.0, "batch 0 is out of range"),
             ("batch", -4.0, "batch -4 is out of range"),
             ("batch", 1.5, "batch 1.5 is out of range: a whole number >= 1, or a fraction of GPU memory"),
             ("device", "gpu", "device 'gpu' is not one of cpu, mps, cuda, cuda:N"),
             ("device", "", "device '' is not one of"),
             ("model", "yolo11q", "model 'yolo11q' is not one of yolo11n"),
             ("model", "resnet50.pt", "model 'resnet50.pt' is not one of")]
BAD_SANITY = [("epochs", 0, "sanity epochs 0 is out of range: a whole number >= 1"),
              ("batch", 0, "sanity batch 0 is out of range"),
              ("imgsz", 100, "sanity imgsz 100 is out of range: a multiple of the model's stride 32"),
              ("max_images", 0, "sanity max_images 0 is out of range"),
              ("min_loss_drop", -0.1, "sanity min_loss_drop -0.1 is out of range: a fraction between 0 and 1"),
              ("min_map50", 1.5, "sanity min_map50 1.5 is out of range")]


def test_the_defaults_and_the_tests_tiny_settings_pass():
    check_settings(TrainConfig(), SanityConfig())
    check_settings(TrainConfig(model="yolo11n.yaml", epochs=1, patience=0, imgsz=64, batch=16, device="0,1"),
                   SanityConfig(epochs=1, batch=1, imgsz=32, max_images=1, min_loss_drop=0, min_map50=1))
    for device in ("cpu", "mps", "cuda", "cuda:1", "CUDA", "3"):
        check_settings(TrainConfig(device=device))


@pytest.mark.parametrize("name, value, line", BAD_TRAIN)
def test_a_training_setting_out_of_range_is_refused_naming_it(name, value, line):
    with pytest.raises(UserError, match="^" + line.replace("(", r"\(").replace(".", r"\.")):
        check_settings(TrainConfig(**{name: value}))


@pytest.mark.parametrize("name, value, line", BAD_SANITY)
def test_a_sanity_setting_out_of_range_is_refused_naming_it(name, value, line):
    with pytest.raises(UserError, match="^" + line.replace(".", r"\.")):
        check_settings(sanity=SanityConfig(**{name: value}))


def test_every_problem_is_named_at_once():
    with pytest.raises(UserError, match="^epochs 0 .*; imgsz 31 .*; sanity batch 0 "):
        check_settings(TrainConfig(epochs=0, imgsz=31), SanityConfig(batch=0))
