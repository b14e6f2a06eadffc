import shutil
import threading
import time


from pathlib import Path

import pytest
import yaml

from components.errors import UserError
from components.data.push import push_dataset
from components.data.snapshot import Manifest, ManifestEntry
from components.storage import StorageError, md5_etag
from components.data.sync import dataset_cache_root, materialize, snapshot_cache, sync_snapshot
from components.data.validate import validate_dataset
from components.training.weights import default_cache_dir
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


@pytest.fixture
def s3_manifest(demo_dataset_dir: Path, s3_bucket: str, s3_faults, tmp_path: Path) -> Path:
    """The demo dataset pushed to S3 and validated there, through the fault proxy."""
    source = f"{s3_bucket}/datasets/demo"
    push_dataset(demo_dataset_dir, source)
    path = tmp_path / "manifest.json"
    assert validate_dataset(source, path).usable
    return path


def test_on_an_sse_kms_bucket_sync_verifies_every_file_and_a_resync_downloads_nothing(
        demo_dataset_dir: Path, s3_bucket: str, s3_faults, tmp_path: Path):
    s3_faults.encrypted = True  # no ETag is the content's MD5
    source = f"{s3_bucket}/datasets/demo"
    push_dataset(demo_dataset_dir, source)
    manifest_path = tmp_path / "manifest.json"
    assert validate_dataset(source, manifest_path).usable
    entries = Manifest.load(manifest_path).entries
    assert all(e.sha256 and e.etag != md5_etag(demo_dataset_dir / e.key) for e in entries)

    dest = tmp_path / "data"
    assert sync_snapshot(manifest_path, dest, workers=4, progress=False).downloaded == len(entries)
    assert all((dest / e.key).read_bytes() == (demo_dataset_dir / e.key).read_bytes() for e in entries)
    resync = sync_snapshot(manifest_path, dest, workers=4, progress=False)
    assert (resync.downloaded, resync.skipped) == (0, len(entries))

    (dest / entries[3].key).unlink()
    s3_faults.inject("corrupt")
    with pytest.raises(StorageError, match=f"{entries[3].key}: downloaded content does not match its CRC32"):
        sync_snapshot(manifest_path, dest, workers=1, progress=False)


@pytest.mark.slow
def test_two_syncs_into_one_folder_leave_each_others_files_in_flight_alone(
        s3_manifest: Path, s3_faults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture):
    # the first sync's held GET must outlast the second sync however loaded the machine: no read timeout ends it
    monkeypatch.setenv("POGONA_S3_READ_TIMEOUT", "900")
    dest = tmp_path / "shared"
    entries = Manifest.load(s3_manifest).entries
    s3_faults.inject_on("GET", entries[0].key, "hold")  # the first sync stops half-way through one file
    first: list[object] = []
    thread = threading.Thread(target=lambda: first.append(sync_snapshot(s3_manifest, dest, 2, progress=False)))
    thread.start()
    try:
        assert s3_faults.held.wait(timeout=60)
        in_flight = _wait_for(lambda: [p for p in dest.rglob(f".{Path(entries[0].key).name}.*.part")])
        torn = dest / "images" / "train" / ".left-by-a-killed-sync.jpg.0123.part"
        torn.write_bytes(b"torn")
        second = sync_snapshot(s3_manifest, dest, workers=4, progress=False)
        assert second.removed == 1 and not torn.exists()
        assert not [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")], \
            "a download was retried (its temporary file goes with it): the held GET must stay in flight"
        assert all(p.exists() for p in in_flight), "the second sync deleted the first one's download"
    finally:
        s3_faults.release()
        thread.join(timeout=60)
    assert first and not isinstance(first[0], BaseException), first
    assert all((dest / e.key).stat().st_size == e.size for e in entries)
    assert not list(dest.rglob("*.part"))


def _wait_for(find, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := find()):
        assert time.monotonic() < deadline, "nothing appeared"
        time.sleep(0.01)
    return found


def test_a_symlinked_folder_dataset_validates_pushes_and_syncs(demo_dataset_dir: Path, s3_bucket: str,
                                                               tmp_path: Path):
    objects = tmp_path / "repo" / ".git" / "annex" / "objects"  # git-annex: the files are links into the annex
    root = tmp_path / "repo" / "dataset"
    for path in sorted(demo_dataset_dir.rglob("*")):
        if path.is_file() and path.suffix != ".cache":
            content = objects / path.relative_to(demo_dataset_dir).as_posix().replace("/", "_")
            content.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, content)
            link = root / path.relative_to(demo_dataset_dir)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(content)
    manifest_path = tmp_path / "manifest.json"
    assert validate_dataset(str(root), manifest_path).usable
    dest = tmp_path / "data"
    sync_snapshot(manifest_path, dest, workers=4, progress=False)
    entries = Manifest.load(manifest_path).entries
    assert all(not (dest / e.key).is_symlink() and (dest / e.key).read_bytes() == (root / e.key).read_bytes()
               for e in entries)
    push_dataset(root, f"{s3_bucket}/datasets/annexed")
    assert validate_dataset(f"{s3_bucket}/datasets/annexed").manifest.fingerprint == \
        Manifest.load(manifest_path).fingerprint


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


def test_materialize_syncs_a_snapshot_into_its_own_cache_folder(manifest: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "cache"))
    fingerprint = Manifest.load(manifest).fingerprint
    data_yaml = materialize(str(manifest))
    assert data_yaml == snapshot_cache(fingerprint) / "data.yaml" == tmp_path / "cache" / fingerprint[:16] / "data.yaml"
    assert yaml.safe_load(data_yaml.read_text())["path"] == str(snapshot_cache(fingerprint).resolve())


def test_datasets_and_weights_are_cached_under_one_root(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("POGONA_CACHE_DIR", raising=False)
    assert dataset_cache_root() == tmp_path / "xdg" / "pogona" / "datasets"
    assert default_cache_dir() == tmp_path / "xdg" / "pogona" / "weights"
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "pod"))  # a pod's mounted cache wins for datasets
    assert dataset_cache_root() == tmp_path / "pod"


def test_a_resync_replaces_a_file_of_the_right_size_whose_sha256_differs(manifest: Path, tmp_path: Path):
    dest = tmp_path / "data"
    sync_snapshot(manifest, dest, progress=False)
    entry = Manifest.load(manifest).entries[0]
    assert entry.sha256, "validation records each file's sha256"
    damaged = dest / entry.key
    original = damaged.read_bytes()
    damaged.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])  # same size, one byte flipped
    summary = sync_snapshot(manifest, dest, progress=False)
    assert (summary.downloaded, summary.skipped) == (1, len(Manifest.load(manifest).entries) - 1)
    assert damaged.read_bytes() == original


def test_a_roboflow_snapshot_resyncs_removing_strays_from_its_own_split_folders(tmp_path: Path):
    from components.data.demo_dataset import DemoSpec, generate_demo_dataset

    source = tmp_path / "export"
    generate_demo_dataset(str(source), DemoSpec(images=6, size=32, layout="roboflow"), progress=False)
    manifest = tmp_path / "manifest.json"
    assert validate_dataset(str(source), manifest).usable
    dest = tmp_path / "data"
    sync_snapshot(manifest, dest, progress=False)
    stray = dest / "valid/images/from_an_older_snapshot.jpg"
    stray.write_bytes(b"old")
    kept = dest / "notes.md"
    kept.write_text("the user's own file beside the snapshot")
    assert sync_snapshot(manifest, dest, progress=False).removed == 1
    assert not stray.exists() and kept.exists()
    assert yaml.safe_load((dest / "data.yaml").read_text())["val"] == "valid/images"
