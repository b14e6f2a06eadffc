import shutil
from pathlib import Path

import pytest

from components.data.push import push_dataset
from components.storage import open_store
from pipelines.cli import main


def test_push_uploads_once_then_only_what_changed(demo_dataset_dir: Path, s3_bucket: str, tmp_path: Path):
    local = tmp_path / "dataset"
    shutil.copytree(demo_dataset_dir, local)
    (local / "labels" / "train.cache").write_bytes(b"ultralytics cache")
    dest = f"{s3_bucket}/datasets/pogona"
    first = push_dataset(local, dest)
    files = [p for p in local.rglob("*") if p.is_file() and p.suffix != ".cache"]
    assert (first.uploaded, first.skipped) == (len(files), 0)
    assert {o.key for o in open_store(dest).list()} == {p.relative_to(local).as_posix() for p in files}

    label = next((local / "labels" / "train").rglob("*.txt"))
    label.write_text("0 0.5 0.5 0.25 0.25\n")
    second = push_dataset(local, dest)
    assert (second.uploaded, second.skipped, second.bytes) == (1, len(files) - 1, label.stat().st_size)
    assert open_store(dest).get_bytes(label.relative_to(local).as_posix()) == label.read_bytes()


def test_cli_push_of_a_missing_folder_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["dataset", "push", "--from", str(tmp_path / "nope"), "--to", str(tmp_path / "store")]) == 2
    assert f"dataset folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err


def test_a_push_to_an_sse_kms_bucket_skips_unchanged_files_by_their_checksum(demo_dataset_dir: Path, s3_bucket: str,
                                                                             s3_faults, tmp_path: Path):
    s3_faults.encrypted = True  # listed ETags are not MD5s: only the objects' CRC32s can prove a file unchanged
    local = tmp_path / "dataset"
    shutil.copytree(demo_dataset_dir, local, ignore=shutil.ignore_patterns("*.cache"))
    dest = f"{s3_bucket}/datasets/pogona"
    total = push_dataset(local, dest).uploaded
    label = next(p for p in (local / "labels" / "val").rglob("*.txt") if p.stat().st_size > 2)
    content = label.read_bytes()
    label.write_bytes(content[:-2] + (b"2\n" if content.endswith(b"1\n") else b"1\n"))  # same size, other content
    assert label.stat().st_size == len(content)
    again = push_dataset(local, dest)
    assert (again.uploaded, again.skipped) == (1, total - 1)
    assert open_store(dest).get_bytes(label.relative_to(local).as_posix()) == label.read_bytes()
