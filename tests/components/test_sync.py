import shutil
from pathlib import Path

import pytest
import yaml

from components.errors import UserError
from components.push import push_dataset
from components.snapshot import Manifest, ManifestEntry
from components.storage import StorageError
from components.sync import sync_snapshot
from components.validate import validate_dataset
from pipelines.cli import main


@pytest.fixture
def manifest(demo_dataset_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "manifest.json"
    assert validate_dataset(str(demo_dataset_dir), path).usable
    return path


def test_sync_materializes_the_snapshot_and_points_data_yaml_at_it(manifest: Path, demo_dataset_dir: Path,
                                                                   tmp_path: Path):
    dest = tmp_path / "data"
    summary = sync_snapshot(manifest, dest, workers=4, progress=False)
    entries = Manifest.load(manifest).entries
    assert (summary.downloaded, summary.skipped) == (len(entries), 0)
    assert summary.bytes == sum(e.size for e in entries)
    assert all((dest / e.key).read_bytes() == (demo_dataset_dir / e.key).read_bytes() for e in entries)
    assert yaml.safe_load(summary.data_yaml.read_text()) == {
        "path": str(dest.resolve()), "train": "images/train", "val": "images/val", "names": {0: "pogona_head"}}


def test_resync_skips_matching_files_repairs_damaged_ones_and_removes_strays(manifest: Path, tmp_path: Path):
    dest = tmp_path / "data"
    sync_snapshot(manifest, dest, progress=False)
    entries = Manifest.load(manifest).entries
    damaged = dest / entries[0].key
    damaged.write_bytes(b"torn")
    stray = dest / "images/train/thermal/from_an_older_snapshot.jpg"
    stray.write_bytes(b"old")
    summary = sync_snapshot(manifest, dest, progress=False)
    assert (summary.downloaded, summary.skipped, summary.removed) == (1, len(entries) - 1, 1)
    assert damaged.stat().st_size == entries[0].size and not stray.exists()


@pytest.mark.parametrize("key", ["../outside.jpg", "images/train/../../../outside.jpg", "/etc/passwd"])
def test_keys_that_would_land_outside_dest_are_refused(key: str, tmp_path: Path, capsys: pytest.CaptureFixture):
    entry = ManifestEntry(key, 3, "etag", "train", "unknown", "image")
    path = tmp_path / "evil.json"
    Manifest.build(str(tmp_path / "store"), {0: "pogona_head"}, [entry]).save(path)
    with pytest.raises(UserError, match=f"manifest key '{key}' would land outside"):
        sync_snapshot(path, tmp_path / "a" / "b" / "data", progress=False)
    assert main(["dataset", "sync", "--manifest", str(path), "--dest", str(tmp_path / "data")]) == 2
    assert key in capsys.readouterr().err


def test_a_sync_that_dies_part_way_resumes_without_downloading_finished_files(
        demo_dataset_dir: Path, s3_bucket: str, s3_faults, tmp_path: Path):
    source = f"{s3_bucket}/datasets/demo"
    push_dataset(demo_dataset_dir, source)
    manifest = tmp_path / "manifest.json"
    assert validate_dataset(source, manifest).usable
    total = len(Manifest.load(manifest).entries)
    dest = tmp_path / "data"
    s3_faults.fail_after(40)
    with pytest.raises(StorageError, match="access denied"):
        sync_snapshot(manifest, dest, workers=4, progress=False)
    finished = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    assert 0 < len(finished) < total
    s3_faults.heal()
    summary = sync_snapshot(manifest, dest, workers=4, progress=False)
    assert (summary.downloaded, summary.skipped) == (total - len(finished), len(finished))
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items())


def test_cli_sync_prints_one_summary_line_and_progress_on_stderr(manifest: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture):
    assert main(["dataset", "sync", "--manifest", str(manifest), "--dest", str(tmp_path / "data")]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "0 skipped" in out and " downloaded" in out and " MB in " in out
    total = len(Manifest.load(manifest).entries)
    assert f"sync: {total}/{total} files" in err


def test_a_snapshot_validation_found_unusable_is_refused_unless_allowed(demo_dataset_dir: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture):
    broken = tmp_path / "broken"
    shutil.copytree(demo_dataset_dir, broken, ignore=shutil.ignore_patterns("*.cache"))
    label = sorted((broken / "labels/train").rglob("*.txt"))[0]
    label.write_text("0 320 240 64 48\n")
    manifest = tmp_path / "manifest.json"
    assert not validate_dataset(str(broken), manifest).usable
    dest = tmp_path / "data"
    with pytest.raises(UserError, match="validation found this dataset unusable .*--allow-unusable"):
        sync_snapshot(manifest, dest, progress=False)
    assert not dest.exists()
    assert main(["dataset", "sync", "--manifest", str(manifest), "--dest", str(dest), "--quiet"]) == 2
    assert f"{label.relative_to(broken).as_posix()} line 1: coordinates" in capsys.readouterr().err
    assert main(["dataset", "sync", "--manifest", str(manifest), "--dest", str(dest), "--quiet",
                 "--allow-unusable"]) == 0
    assert (dest / label.relative_to(broken)).read_text() == "0 320 240 64 48\n"
