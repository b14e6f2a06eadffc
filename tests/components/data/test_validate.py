import shutil
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.errors import UserError
from components.data.push import push_dataset
from components.data.snapshot import Manifest
from components.data.sync import sync_snapshot
from components.data.validate import validate_dataset
from pipelines.cli import main

SPEC = DemoSpec(images=12, size=64, seed=3)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "dataset"
    generate_demo_dataset(str(root), SPEC, progress=False)
    return root


@pytest.fixture
def dataset(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    shutil.copytree(pristine, root)
    return root


def test_a_good_dataset_is_usable_and_counted(dataset: Path, tmp_path: Path):
    result = validate_dataset(str(dataset), tmp_path / "manifest.json", tmp_path / "report.md")
    assert result.usable and result.errors == [] and result.warnings == []
    assert set(result.counts) == {"train", "val"}
    assert set(result.counts["train"]) == {"thermal", "visible"}
    assert sum(g.images for groups in result.counts.values() for g in groups.values()) == 12
    labeled = sum(p.read_text().strip() != "" for p in (dataset / "labels").rglob("*.txt"))
    assert sum(g.images - g.backgrounds for groups in result.counts.values() for g in groups.values()) == labeled
    assert Manifest.load(tmp_path / "manifest.json") == result.manifest
    assert len(result.manifest.entries) == 24 and result.manifest.names == {0: "pogona_head"}
    report = (tmp_path / "report.md").read_text()
    assert "**Verdict: usable**" in report and "| train | thermal |" in report and "## Box sizes" in report


def _write(root: Path, key: str, data: bytes | str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _first(root: Path, pattern: str) -> str:
    return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.stat().st_size > 0)[0]


def _leak(root: Path) -> str:
    train_image = _first(root, "images/train/thermal/*.jpg")
    shutil.copy(root / train_image, root / "images/val/thermal/copy_of_train.jpg")
    return "images/val/thermal/copy_of_train.jpg: leakage, same content as " + train_image


def _label_line(line: str) -> Callable[[Path], str]:
    def mutate(root: Path) -> str:
        key = _first(root, "labels/train/visible/*.txt")
        _write(root, key, line + "\n")
        return key
    return mutate


def _broken_image(root: Path) -> str:
    key = _first(root, "images/train/thermal/*.jpg")
    _write(root, key, (root / key).read_bytes()[:300])
    return key + ": image does not decode"


def _orphan_label(root: Path) -> str:
    _write(root, "labels/train/visible/visible_99999.txt", "0 0.5 0.5 0.2 0.2\n")
    return "labels/train/visible/visible_99999.txt: label without an image"


def _no_val(root: Path) -> str:
    shutil.rmtree(root / "images/val")
    shutil.rmtree(root / "labels/val")
    return "images/val: the val split has no images"


def _no_val_instances(root: Path) -> str:
    for label in (root / "labels/val").rglob("*.txt"):
        label.write_text("")
    return "labels/val: the val split has no labeled instances"


@pytest.mark.parametrize("mutate, message", [
    (_broken_image, "image does not decode"),
    (_label_line("0 0.5 0.5 0.2"), "line 1: expected 5 values"),
    (_label_line("0 0.5 0.5 0.2 wide"), "line 1: 'wide' is not a number"),
    (_label_line("3 0.5 0.5 0.2 0.2"), "line 1: class id 3 is not one of the 1 classes"),
    (_label_line("0 1.2 0.5 0.2 0.2"), "line 1: coordinates must be fractions of the image size"),
    (_orphan_label, "label without an image"),
    (_leak, "leakage"),
    (_no_val, "the val split has no images"),
    (_no_val_instances, "the val split has no labeled instances"),
])
def test_each_broken_dataset_is_refused_naming_the_key(dataset: Path, mutate: Callable[[Path], str], message: str,
                                                       capsys: pytest.CaptureFixture):
    culprit = mutate(dataset)
    result = validate_dataset(str(dataset))
    assert not result.usable
    assert any(culprit in error and message in error for error in result.errors), result.errors
    assert main(["dataset", "validate", "--source", str(dataset)]) == 1
    assert culprit in capsys.readouterr().err


def _jpeg_quality_40(image: Image.Image, path: Path) -> Path:
    image.save(path.with_suffix(".jpg"), quality=40)
    return path.with_suffix(".jpg")


def _png_at_half_size(image: Image.Image, path: Path) -> Path:
    image.resize((image.width // 2, image.height // 2)).save(path.with_suffix(".png"))
    return path.with_suffix(".png")


def _jpeg_enlarged(image: Image.Image, path: Path) -> Path:
    image.resize((image.width * 3 // 2, image.height * 3 // 2)).save(path.with_suffix(".jpg"), quality=85)
    return path.with_suffix(".jpg")


@pytest.mark.parametrize("resave", [_jpeg_quality_40, _png_at_half_size, _jpeg_enlarged])
def test_a_picture_resaved_or_resized_in_another_split_is_leakage_naming_both_keys(
        tmp_path: Path, resave: Callable[[Image.Image, Path], Path]):
    dataset = tmp_path / "dataset"  # 160 px: a copy at half size still has the 64 px the signature compares
    generate_demo_dataset(str(dataset), DemoSpec(images=12, size=160, seed=5), progress=False)
    original = _first(dataset, "images/train/visible/*.jpg")
    copy = resave(Image.open(dataset / original), dataset / "images/val/visible/visible_resaved")
    copy_key = copy.relative_to(dataset).as_posix()
    result = validate_dataset(str(dataset))
    assert not result.usable
    assert [e for e in result.errors if "leakage" in e] == [
        next(e for e in result.errors if e.startswith(f"{copy_key}: leakage, looks like {original} in train"))]
    assert validate_dataset(str(dataset), near_duplicates=False).usable


def test_image_without_label_is_a_counted_background(dataset: Path):
    before = validate_dataset(str(dataset)).counts["train"]["thermal"]
    (dataset / _first(dataset, "labels/train/thermal/*.txt")).unlink()
    after = validate_dataset(str(dataset))
    assert after.usable
    assert after.counts["train"]["thermal"].backgrounds == before.backgrounds + 1
    assert after.counts["train"]["thermal"].images == before.images


def _rename_class(root: Path) -> None:
    _write(root, "data.yaml", "names:\n  0: pogona_face\n")


def _add_class(root: Path) -> None:
    _write(root, "data.yaml", "names: [pogona_head, pogona_tail]\n")


def _edit_label(root: Path) -> None:
    key = _first(root, "labels/val/thermal/*.txt")
    _write(root, key, (root / key).read_text().replace("0.", "0.0", 1))


def _reencode_image(root: Path) -> None:
    key = _first(root, "images/train/visible/*.jpg")
    Image.open(root / key).save(root / key, quality=70)


def _same_names_written_otherwise(root: Path) -> None:
    _write(root, "data.yaml", "# the one class\nnames: [pogona_head]\npath: /elsewhere\n")


def _unrelated_object(root: Path) -> None:
    _write(root, "notes/todo.txt", "relabel 12")


def _copied_as_it_is(root: Path) -> None:
    """The same dataset in another place (the test copies it)."""


@pytest.mark.parametrize("change, counts", [
    (_rename_class, True), (_add_class, True), (_edit_label, True), (_reencode_image, True),
    (_same_names_written_otherwise, False), (_unrelated_object, False), (_copied_as_it_is, False),
])
def test_the_fingerprint_changes_with_images_labels_and_class_names_only(dataset: Path, tmp_path: Path,
                                                                          change: Callable[[Path], None],
                                                                          counts: bool):
    before = validate_dataset(str(dataset)).manifest.fingerprint
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dataset, elsewhere)
    change(elsewhere)
    after = validate_dataset(str(elsewhere)).manifest.fingerprint
    assert (after != before) == counts


def test_class_names_come_from_the_dataset_else_the_contract(dataset: Path):
    _write(dataset, "data.yaml", "names:\n  0: pogona_head\n  1: pogona_tail\n")
    _write(dataset, _first(dataset, "labels/train/visible/*.txt"), "1 0.5 0.5 0.2 0.2\n")
    assert validate_dataset(str(dataset)).manifest.names == {0: "pogona_head", 1: "pogona_tail"}
    (dataset / "data.yaml").unlink()
    result = validate_dataset(str(dataset))
    assert result.manifest.names == {0: "pogona_head"} and not result.usable


@pytest.mark.parametrize("data_yaml, message", [
    (b"names:\n  0: pogona_h\xe9ad\n", "data.yaml is not UTF-8 text"),
    (b"names: []\n", "data.yaml has no `names`"),
    (b"names:\n  0: pogona_head\n  2: pogona_tail\n", "class ids in `names` must be 0 to 1"),
])
def test_unreadable_class_names_are_one_line_naming_data_yaml(dataset: Path, data_yaml: bytes, message: str,
                                                               capsys: pytest.CaptureFixture):
    _write(dataset, "data.yaml", data_yaml)
    with pytest.raises(UserError, match=message):
        validate_dataset(str(dataset))
    assert main(["dataset", "validate", "--source", str(dataset)]) == 2
    assert f"{(dataset / 'data.yaml').as_uri()}" in capsys.readouterr().err


def test_an_undecodable_image_is_named_by_its_key_not_the_local_copy(dataset: Path, tmp_path: Path):
    key = _first(dataset, "images/train/thermal/*.jpg")
    _write(dataset, key, b"not an image")
    cache = tmp_path / "cache"
    errors = [e for e in validate_dataset(str(dataset), cache_dir=cache).errors if "does not decode" in e]
    assert len(errors) == 1 and errors[0].startswith(f"{key}: image does not decode (")
    assert str(cache) not in errors[0]


def test_modality_from_filename_prefix_and_unknown(dataset: Path):
    images = dataset / "images/train"
    shutil.move(images / "thermal", images / "cam")
    shutil.move(dataset / "labels/train/thermal", dataset / "labels/train/cam")
    moved = next((images / "cam").glob("*.jpg"))
    shutil.move(moved, images / "IMG_0001.jpg")
    shutil.move(dataset / "labels/train/cam" / f"{moved.stem}.txt", dataset / "labels/train/IMG_0001.txt")
    result = validate_dataset(str(dataset), report_path=dataset.parent / "report.md")
    assert result.usable, result.errors
    assert set(result.counts["train"]) == {"thermal", "visible", "unknown"}
    assert result.counts["train"]["unknown"].images == 1
    report = (dataset.parent / "report.md").read_text()  # the image no rule places is a group named plainly
    assert "| train | no modality | 1 |" in report and "unknown" not in report
    assert result.metrics()["train_no_modality_images"] == 1 and not any("unknown" in k for k in result.metrics())


def test_a_dataset_without_modalities_is_counted_per_split_with_no_modality_column(no_modality_dataset_dir: Path,
                                                                                   tmp_path: Path):
    result = validate_dataset(str(no_modality_dataset_dir), report_path=tmp_path / "report.md")
    assert result.usable and result.warnings == []
    report = (tmp_path / "report.md").read_text()
    counts = {split: sum(g.images for g in groups.values()) for split, groups in result.counts.items()}
    assert counts == {"train": 64, "val": 16}
    assert "| split | images | backgrounds | instances |" in report and "| val | 16 |" in report
    assert "modality" not in report.lower() and "unknown" not in report
    assert result.metrics() == {f"{split}_{name}": float(getattr(groups["unknown"], name))
                                for split, groups in result.counts.items()
                                for name in ("images", "backgrounds", "instances")}


def test_objects_outside_the_layout_are_warned_about(dataset: Path):
    _write(dataset, "notes/todo.txt", "relabel 12")
    result = validate_dataset(str(dataset))
    assert result.usable and result.warnings == [
        "notes/todo.txt: not an image, label or image list of a split in data.yaml; ignored"]


def test_s3_dataset_validates_and_its_cached_copy_makes_sync_free(pristine: Path, s3_bucket: str, tmp_path: Path):
    source = f"{s3_bucket}/datasets/pogona"
    push_dataset(pristine, source)
    cache = tmp_path / "cache"
    manifest = tmp_path / "manifest.json"
    result = validate_dataset(source, manifest, cache_dir=cache)
    assert result.usable and result.manifest.source == source
    summary = sync_snapshot(manifest, cache, progress=False)
    assert (summary.downloaded, summary.skipped) == (0, 24)


def test_two_images_with_one_stem_both_get_its_boxes(dataset: Path):
    before = validate_dataset(str(dataset)).counts["train"]["thermal"]
    key = _first(dataset, "images/train/thermal/*.jpg")
    label = (dataset / key.replace("images/", "labels/", 1)).with_suffix(".txt")
    Image.open(dataset / key).save((dataset / key).with_suffix(".png"))
    after = validate_dataset(str(dataset))
    assert after.usable, after.errors
    boxes = len([line for line in label.read_text().splitlines() if line.strip()])
    assert after.counts["train"]["thermal"].images == before.images + 1
    assert after.counts["train"]["thermal"].instances == before.instances + boxes
