"""`pogona weights stage` as an operator runs it to stage pretrained weights on a store without internet."""

from pathlib import Path

import pytest

from components.storage import open_store
from components.runtime.yolo_env import offline_ultralytics
from pipelines.cli import main


def test_stage_uploads_a_checkpoint_where_runs_find_it_by_default(s3_bucket: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture):
    YOLO = offline_ultralytics().YOLO

    checkpoint = tmp_path / "yolo11n.pt"
    YOLO("yolo11n.yaml").save(checkpoint)
    assert main(["weights", "stage", str(checkpoint), "--store", s3_bucket]) == 0
    assert open_store(s3_bucket).get_bytes("weights/yolo11n.pt") == checkpoint.read_bytes()
    assert f"{s3_bucket}/weights/yolo11n.pt" in capsys.readouterr().out


def test_stage_refuses_a_file_that_is_not_a_checkpoint_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture):
    download_page = tmp_path / "yolo11s.pt"
    download_page.write_text("<html>rate limit exceeded</html>\n")  # what a failed download may leave
    assert main(["weights", "stage", str(download_page), "--store", str(tmp_path / "store")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("pogona weights: error: ") and f"{download_page} is not a YOLO checkpoint" in error
    assert not (tmp_path / "store").exists()
