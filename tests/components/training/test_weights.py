"""Base weights without the internet: given ones win, then the store's, then the image's, then the YAML from scratch
(said in the log); staging refuses what is not a YOLO checkpoint."""

import logging
import shutil
from pathlib import Path

import pytest

from components.errors import UserError
from components.storage import open_store
from components.training.weights import WEIGHTS_DIR_ENV, resolve_weights, stage_weights
from components.runtime.yolo_env import offline_ultralytics


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small YOLO checkpoint: yolo11n built from its YAML and saved, as ultralytics saves pretrained weights."""
    YOLO = offline_ultralytics().YOLO

    path = tmp_path_factory.mktemp("weights") / "yolo11n.pt"
    YOLO("yolo11n.yaml").save(path)
    return path


def test_given_weights_win_then_the_store_then_the_image_then_scratch(checkpoint: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    store, cache = tmp_path / "store", tmp_path / "cache"
    stage_weights(checkpoint, str(store))
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    shutil.copyfile(checkpoint, image_dir / "yolo11n.pt")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(image_dir))
    given = tmp_path / "mine.pt"
    shutil.copyfile(checkpoint, given)

    chosen = resolve_weights(str(given), "yolo11n", cache, str(store))
    assert (chosen.source, chosen.path, chosen.pretrained) == ("given", str(given), True)

    chosen = resolve_weights("", "yolo11n", cache, str(store))
    assert (chosen.source, chosen.uri, chosen.pretrained) == ("store", open_store(store).url("weights/yolo11n.pt"),
                                                              True)
    assert Path(chosen.path).read_bytes() == checkpoint.read_bytes() and cache in Path(chosen.path).parents

    chosen = resolve_weights("", "yolo11n", cache, str(tmp_path / "empty-store"))
    assert (chosen.source, chosen.path, chosen.pretrained) == ("image", str(image_dir / "yolo11n.pt"), True)
    assert resolve_weights("", "yolo11n", cache).source == "image"  # no store at all

    chosen = resolve_weights("", "yolo11s", cache, str(store))  # neither holds yolo11s.pt
    assert (chosen.source, chosen.path, chosen.pretrained) == ("scratch", "yolo11s.yaml", False)
    assert resolve_weights("", "yolo11n.yaml", cache, str(store)).source == "scratch"  # a YAML is built as asked
    monkeypatch.delenv(WEIGHTS_DIR_ENV)
    assert resolve_weights("", "yolo11n", cache, str(tmp_path / "empty-store")).source == "scratch"


def test_training_from_scratch_says_so_once_in_the_log(checkpoint: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="pogona"):
        resolve_weights("", "yolo11s", tmp_path)
    warnings = [record for record in caplog.records if record.name == "pogona" and record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "yolo11s" in warnings[0].message and "from scratch" in warnings[0].message
    assert "more epochs" in warnings[0].message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pogona"):
        resolve_weights(str(checkpoint), "yolo11n", tmp_path)
    assert not [record for record in caplog.records if record.name == "pogona"]


def test_weights_come_from_object_storage_or_a_file_never_by_name(checkpoint: Path, s3_bucket: str, tmp_path: Path):
    with pytest.raises(UserError, match="upload it to <store>/weights/yolo11n.pt"):
        resolve_weights("yolo11n.pt", "yolo11n", tmp_path)
    open_store(s3_bucket).upload_file(checkpoint, "weights/yolo11n.pt")
    chosen = resolve_weights(f"{s3_bucket}/weights/yolo11n.pt", "yolo11n", tmp_path / "cache")
    local = Path(chosen.path)
    assert local.read_bytes() == checkpoint.read_bytes() and (tmp_path / "cache") in local.parents
    assert (chosen.source, chosen.uri) == ("given", f"{s3_bucket}/weights/yolo11n.pt")
    modified = local.stat().st_mtime_ns
    assert resolve_weights(f"{s3_bucket}/weights/yolo11n.pt", "yolo11n", tmp_path / "cache").path == str(local)
    assert local.stat().st_mtime_ns == modified  # cached, not downloaded again
    with pytest.raises(UserError, match="do not exist"):
        resolve_weights(f"{s3_bucket}/weights/missing.pt", "yolo11n", tmp_path / "cache")
    with pytest.raises(UserError, match="not found"):
        resolve_weights(str(tmp_path / "missing.pt"), "yolo11n", tmp_path / "cache", s3_bucket)


def test_staging_refuses_what_is_not_a_yolo_checkpoint(tmp_path: Path):
    import torch

    notes = tmp_path / "yolo11s.pt"
    notes.write_text("not a checkpoint\n")
    with pytest.raises(UserError, match=f"{notes} is not a YOLO checkpoint"):
        stage_weights(notes, str(tmp_path / "store"))
    state = tmp_path / "state.pt"
    torch.save({"epoch": 3}, state)
    with pytest.raises(UserError, match=f"{state} is not a YOLO checkpoint: it holds no 'model'"):
        stage_weights(state, str(tmp_path / "store"))
    renamed = tmp_path / "yolo11n.pt.bak"
    torch.save({"model": None}, renamed)
    with pytest.raises(UserError, match="name it <model>.pt"):
        stage_weights(renamed, str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()  # nothing was uploaded
