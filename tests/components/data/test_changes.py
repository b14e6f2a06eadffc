"""What changed since the champion's snapshot: counted per split and modality, shown in the report."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from components.data.changes import changes_since_champion, compare_snapshots
from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.reporting.report import write_report
from components.data.snapshot import Manifest
from components.storage import open_store
from components.data.validate import validate_dataset

CHAMPION = {"run_id": "night-1"}
FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    generate_demo_dataset(str(root), DemoSpec(images=20, size=64, seed=7), progress=False)
    return root


@pytest.fixture
def store(dataset: Path, tmp_path: Path) -> Path:
    """A store whose production run `night-1` was trained on the dataset as it is now."""
    root = tmp_path / "store"
    result = validate_dataset(str(dataset), tmp_path / "night-1.json")
    open_store(str(root)).upload_file((tmp_path / "night-1.json"), "runs/night-1/manifest.json")
    open_store(str(root)).put_json("models/pogona-head/production.json",
                                   {**CHAMPION, "dataset_fingerprint": result.manifest.fingerprint})
    return root


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _edit(dataset: Path) -> None:
    """A night's labeling: one new visible training image, one thermal val image gone, one thermal training
    image re-exported, one visible training label corrected, and a class renamed."""
    new = _first(dataset, "images/train/visible/*.jpg")
    shutil.copy(new, new.with_name("visible_new.jpg"))
    shutil.copy(dataset / "labels/train/visible" / f"{new.stem}.txt", dataset / "labels/train/visible/visible_new.txt")
    gone = _first(dataset, "images/val/thermal/*.jpg")
    gone.unlink()
    (dataset / "labels/val/thermal" / f"{gone.stem}.txt").unlink()
    changed = _first(dataset, "images/train/thermal/*.jpg")
    Image.open(changed).save(changed, quality=60)
    label = sorted(p for p in (dataset / "labels/train/visible").glob("*.txt") if p.read_text().strip())[1]
    label.write_text(label.read_text().replace("0.", "0.0", 1))
    (dataset / "data.yaml").write_text("names:\n  0: pogona_face\n")


def test_changes_are_counted_per_split_and_modality_against_the_champions_snapshot(dataset: Path, store: Path,
                                                                                    tmp_path: Path):
    _edit(dataset)
    validate_dataset(str(dataset), tmp_path / "tonight.json")
    changes = changes_since_champion(str(store), CHAMPION, tmp_path / "tonight.json")
    assert changes.compared and "production run night-1" in changes.baseline
    assert str(open_store(str(store)).url("runs/night-1/manifest.json")) in changes.baseline
    counts = {(g.split, g.modality): (g.images_added, g.images_removed, g.images_changed, g.labels_added,
                                      g.labels_removed, g.labels_edited) for g in changes.groups}
    assert counts == {("train", "thermal"): (0, 0, 1, 0, 0, 0), ("train", "visible"): (1, 0, 0, 1, 0, 1),
                      ("val", "thermal"): (0, 1, 0, 0, 1, 0)}
    assert (changes.names_before, changes.names_after) == ({0: "pogona_head"}, {0: "pogona_face"})


def test_the_report_and_its_markdown_say_what_changed(dataset: Path, store: Path, tmp_path: Path):
    _edit(dataset)
    validate_dataset(str(dataset), tmp_path / "tonight.json")
    changes_since_champion(str(store), CHAMPION, tmp_path / "tonight.json").save(tmp_path / "changes.json")
    result = write_report(FIXTURES / "converged_early" / "results.csv", tmp_path / "report",
                          changes=tmp_path / "changes.json")
    markdown = result.markdown.read_text()
    assert "## What changed since the champion" in markdown
    assert "| train | visible | 1 | 0 | 0 | 1 | 0 | 1 |" in markdown
    assert "| val | thermal | 0 | 1 | 0 | 0 | 1 | 0 |" in markdown
    assert "Class names were 0: pogona_head; now 0: pogona_face." in markdown
    assert "What changed since the champion" in result.html.read_text()


def test_an_unchanged_dataset_in_a_bucket_with_other_etags_says_nothing_differs(dataset: Path, store: Path,
                                                                              tmp_path: Path):
    tonight = validate_dataset(str(dataset)).manifest  # then copied to an SSE-KMS bucket: every ETag opaque
    Manifest.build("s3://kms-bucket/datasets/pogona", tonight.names,
                   [replace(entry, etag=f"kms-{index}") for index, entry in enumerate(tonight.entries)]
                   ).save(tmp_path / "tonight.json")
    changes_since_champion(str(store), CHAMPION, tmp_path / "tonight.json").save(tmp_path / "changes.json")
    markdown = write_report(FIXTURES / "converged_early" / "results.csv", tmp_path / "report",
                            changes=tmp_path / "changes.json").markdown.read_text()
    assert "No image, label or class name differs from that snapshot." in markdown


def test_without_a_readable_champion_snapshot_the_report_says_why(dataset: Path, tmp_path: Path):
    validate_dataset(str(dataset), tmp_path / "tonight.json")
    none = changes_since_champion(str(tmp_path / "store"), None, tmp_path / "tonight.json")
    assert not none.compared and none.baseline == "no production model yet: nothing to compare with"
    missing = changes_since_champion(str(tmp_path / "store"), {"run_id": "gone"}, tmp_path / "tonight.json")
    assert not missing.compared and "runs/gone/manifest.json does not exist" in missing.baseline


def test_a_roboflow_export_reassigned_between_splits_counts_by_the_recorded_split(tmp_path: Path):
    """The split comes from data.yaml, not the key: a list moving an image from val to train moves it in the count."""
    root = tmp_path / "export"
    generate_demo_dataset(str(root), DemoSpec(images=10, size=64, seed=7, layout="roboflow"), progress=False)
    images = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    val = [key for key in images if key.startswith("valid/")]
    (root / "train.txt").write_text("".join(f"./{key}\n" for key in images if key not in val[1:]))  # val[0] moves
    (root / "val.txt").write_text("".join(f"./{key}\n" for key in val[1:]))
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: [pogona_head]\n")
    before = validate_dataset(str(root)).manifest
    (root / "data.yaml").write_text("train: train.txt\nval: val.txt\nnames: [pogona_head]\n")
    after = validate_dataset(str(root)).manifest
    assert after.fingerprint != before.fingerprint
    modality = "thermal" if "thermal_" in val[0] else "visible"
    changes = compare_snapshots(before, after, "before").groups
    assert {(g.split, g.modality): (g.images_added, g.images_removed, g.labels_added, g.labels_removed)
            for g in changes} == {("val", modality): (0, 1, 0, 1), ("train", modality): (1, 0, 1, 0)}
