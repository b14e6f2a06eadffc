"""Datasets in the layouts people export, read by pogona and by ultralytics' own reader: the splits must agree.

Each layout is built in a tmp folder in well under a second (32 px noise images); pogona reads it from a
folder store and through S3 (moto), syncs it, and ultralytics' `check_det_dataset` + dataset image listing
read both the original and the synced copy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from components.config import IMAGE_SUFFIXES, SPLITS
from components.data.dataset import load_dataset
from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.data.snapshot import Manifest
from components.data.sync import sync_snapshot
from components.data.validate import validate_dataset
from components.errors import UserError
from pipelines.cli import main

_LABEL = "0 0.5 0.5 0.3 0.3\n"


def _image(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write(root: Path, key: str, data: bytes | str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _ultralytics_label(image: str) -> str:
    from components.runtime.yolo_env import offline_ultralytics

    offline_ultralytics()
    from ultralytics.data.utils import img2label_paths

    return img2label_paths([f"/{image}"])[0].lstrip("/")


def _sample(root: Path, image_key: str, seed: int) -> None:
    """An image and its label where ultralytics looks for it."""
    _write(root, image_key, _image(seed))
    _write(root, _ultralytics_label(image_key), _LABEL)


def roboflow(root: Path) -> dict[str, int]:
    """Roboflow's YOLO export: <split>/images|labels, data.yaml paths from one level down, nc, README files."""
    generate_demo_dataset(str(root), DemoSpec(images=10, size=32, seed=5, layout="roboflow"), progress=False)
    spec = yaml.safe_load((root / "data.yaml").read_text())
    _write(root, "data.yaml", yaml.safe_dump({**spec, "test": "../test/images", "nc": 1}))
    _sample(root, "test/images/visible_90000.jpg", 90)
    _write(root, "README.roboflow.txt", "exported from roboflow.com\n")
    return {"train": 8, "val": 2, "test": 1}


def coco_style(root: Path) -> dict[str, int]:
    """COCO's split names: images/train2017, images/val2017."""
    for index in range(5):
        _sample(root, f"images/{'val2017' if index < 2 else 'train2017'}/{index:012d}.jpg", index)
    _write(root, "data.yaml", "train: images/train2017\nval: images/val2017\nnames: {0: pogona_head}\n")
    return {"train": 3, "val": 2}


def txt_lists(root: Path) -> dict[str, int]:
    """.txt image lists relative to the list (`./`), the images in one shared folder."""
    for index in range(6):
        _sample(root, f"images/all/frame_{index}.jpg", 10 + index)
    _write(root, "train.txt", "".join(f"./images/all/frame_{i}.jpg\n" for i in range(4)))
    _write(root, "lists/val.txt", "./../images/all/frame_4.jpg\n\n./../images/all/frame_5.jpg\n")
    _write(root, "data.yaml", "train: train.txt\nval: lists/val.txt\nnames: [pogona_head]\n")
    return {"train": 4, "val": 2}


def several_folders(root: Path) -> dict[str, int]:
    """A split made of several folders (two cameras' exports) and one nested a level deeper."""
    for index in range(3):
        _sample(root, f"cam_a/images/a_{index}.jpg", 20 + index)
        _sample(root, f"cam_b/images/night/b_{index}.jpg", 30 + index)
    _sample(root, "images/holdout/images/c_0.jpg", 40)  # its label: the last `images` becomes `labels`
    _write(root, "data.yaml", "train: [cam_a/images, cam_b/images]\nval: [images/holdout/images]\n"
                              "names: [pogona_head]\n")
    return {"train": 6, "val": 1}


# every image suffix pogona takes but .jpg, with the format PIL writes it in
FORMATS = {".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
           ".mpo": "MPO", ".jp2": "JPEG2000", ".avif": "AVIF"}


def image_formats(root: Path) -> dict[str, int]:
    """An image in each format ultralytics reads and validation decodes (train), a .bmp and a .webp in val."""
    for index, (suffix, kind) in enumerate([*FORMATS.items(), (".bmp", "BMP"), (".webp", "WEBP")]):
        split = "train" if index < len(FORMATS) else "val"
        with Image.open(io.BytesIO(_image(50 + index))) as picture:
            buffer = io.BytesIO()
            picture.save(buffer, format=kind, **({"save_all": True, "append_images": [picture]} if kind == "MPO"
                                                 else {}))  # an MPO holds several pictures
        _write(root, f"images/{split}/frame_{index}{suffix}", buffer.getvalue())
        _write(root, f"labels/{split}/frame_{index}.txt", _LABEL)
    _write(root, "data.yaml", "train: images/train\nval: images/val\nnames: [pogona_head]\n")
    return {"train": len(FORMATS), "val": 2}


LAYOUTS = [roboflow, coco_style, txt_lists, several_folders, image_formats]


def test_every_image_suffix_pogona_takes_is_one_ultralytics_reads_and_is_tested():
    from components.runtime.yolo_env import offline_ultralytics

    offline_ultralytics()
    from ultralytics.data.utils import IMG_FORMATS

    assert set(IMAGE_SUFFIXES) == {".jpg", *FORMATS}
    assert {suffix[1:] for suffix in IMAGE_SUFFIXES} <= IMG_FORMATS


@pytest.mark.slow
def test_images_in_every_format_taken_train(tmp_path: Path):
    """ultralytics decodes each synced image in training: none is skipped as corrupt."""
    from components.runtime.yolo_env import offline_ultralytics

    expected = image_formats(tmp_path / "export")
    validate_dataset(str(tmp_path / "export"), tmp_path / "manifest.json")
    sync_snapshot(tmp_path / "manifest.json", tmp_path / "synced", progress=False)
    data = load_dataset(tmp_path / "synced").write_yaml(tmp_path / "data.yaml")
    model = offline_ultralytics().YOLO("yolo11n.yaml")
    model.train(data=str(data), epochs=1, imgsz=64, batch=4, device="cpu", workers=0, project=str(tmp_path),
                name="train", plots=False, verbose=False, val=False)
    trained = model.trainer.train_loader.dataset
    assert len(trained.im_files) == expected["train"]
    assert {Path(f).suffix for f in trained.im_files} == set(FORMATS)
    assert sum(len(label["cls"]) for label in trained.labels) == expected["train"]


def ultralytics_images(data_yaml: Path) -> dict[str, list[str]]:
    """Each split's image files as ultralytics' training reads them (`check_det_dataset`, then the dataset's
    own listing)."""
    from components.runtime.yolo_env import offline_ultralytics

    offline_ultralytics()
    from ultralytics.data.base import BaseDataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(data_yaml), autodownload=False)
    reader = SimpleNamespace(prefix="", fraction=1.0)
    return {split: BaseDataset.get_img_files(reader, data[split]) for split in SPLITS if data.get(split)}


def _split_images(manifest: Manifest) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = {}
    for entry in manifest.entries:
        if entry.role == "image":
            splits.setdefault(entry.split, set()).add(entry.key)
    return splits


def _relative(root: Path, files: list[str]) -> set[str]:
    return {Path(f).resolve().relative_to(root.resolve()).as_posix() for f in files}


def _agrees_with_ultralytics(root: Path, manifest: Manifest, expected: dict[str, int]) -> None:
    seen = ultralytics_images(root / "data.yaml")
    ours = _split_images(manifest)
    assert {split: len(images) for split, images in ours.items()} == expected
    assert {split: _relative(root, files) for split, files in seen.items()} == ours
    labels = {entry.key for entry in manifest.entries if entry.role == "label"}
    assert labels == {_ultralytics_label(key) for keys in ours.values() for key in keys}


@pytest.mark.parametrize("build", LAYOUTS)
def test_each_layout_is_read_as_ultralytics_reads_it_and_synced_so_it_still_is(build: Callable, tmp_path: Path):
    root = tmp_path / "export"
    expected = build(root)
    result = validate_dataset(str(root), tmp_path / "manifest.json")
    assert result.usable, result.errors
    _agrees_with_ultralytics(root, result.manifest, expected)
    original = load_dataset(root)  # what training reads from a local folder, without a bucket
    assert {split: len(original.images(split)) for split in original.splits} == expected

    dest = tmp_path / "synced"
    sync_snapshot(tmp_path / "manifest.json", dest, progress=False)
    _agrees_with_ultralytics(dest, result.manifest, expected)
    local = load_dataset(dest)
    assert {split: len(local.images(split)) for split in local.splits} == expected


@pytest.mark.parametrize("build", LAYOUTS)
def test_each_layout_pushed_as_it_is_validates_and_syncs_through_s3(build: Callable, s3_bucket: str,
                                                                     tmp_path: Path):
    root = tmp_path / "export"
    expected = build(root)
    source = f"{s3_bucket}/datasets/{build.__name__}"
    assert main(["dataset", "push", "--from", str(root), "--to", source]) == 0
    result = validate_dataset(source, tmp_path / "manifest.json")
    assert result.usable, result.errors
    _agrees_with_ultralytics(root, result.manifest, expected)
    dest = tmp_path / "synced"
    sync_snapshot(tmp_path / "manifest.json", dest, progress=False)
    _agrees_with_ultralytics(dest, result.manifest, expected)


def test_the_contract_layout_written_by_the_demo_is_read_by_ultralytics_unchanged(tmp_path: Path):
    counts = generate_demo_dataset(str(tmp_path / "demo"), DemoSpec(images=10, size=32), progress=False)
    result = validate_dataset(str(tmp_path / "demo"))
    assert result.usable and result.warnings == []
    _agrees_with_ultralytics(tmp_path / "demo", result.manifest, counts)


def test_a_roboflow_export_keeps_the_thermal_and_visible_slices_by_filename_prefix(tmp_path: Path):
    roboflow(tmp_path)
    result = validate_dataset(str(tmp_path))
    assert set(result.counts["train"]) == {"thermal", "visible"} and set(result.counts["test"]) == {"visible"}
    assert result.warnings == ["README.roboflow.txt: not an image, label or image list of a split in data.yaml; ignored"]


def test_a_dataset_without_modalities_gets_one_group_per_split_and_no_warnings(tmp_path: Path):
    coco_style(tmp_path)
    result = validate_dataset(str(tmp_path))
    assert result.usable and result.warnings == []
    assert {split: list(groups) for split, groups in result.counts.items()} == {"train": ["unknown"],
                                                                                "val": ["unknown"]}


def test_modalities_stated_in_data_yaml_slice_validation_and_the_synced_dataset_alike(tmp_path: Path):
    root = tmp_path / "export"
    several_folders(root)
    spec = yaml.safe_load((root / "data.yaml").read_text())
    spec["modalities"] = {"thermal": "cam_b/*", "visible": ["cam_a/*", "*"]}  # the first that matches
    _write(root, "data.yaml", yaml.safe_dump(spec))
    result = validate_dataset(str(root), tmp_path / "manifest.json")
    assert {split: {m: g.images for m, g in groups.items()} for split, groups in result.counts.items()} == {
        "train": {"thermal": 3, "visible": 3}, "val": {"visible": 1}}
    dest = tmp_path / "synced"
    sync_snapshot(tmp_path / "manifest.json", dest, progress=False)
    local = load_dataset(dest)
    by_modality = {split: sorted(local.modality(image, split) for image in local.images(split)) for split in local.splits}
    assert by_modality == {"train": ["thermal"] * 3 + ["visible"] * 3, "val": ["visible"]}


@pytest.mark.parametrize("data_yaml, extra, message", [
    ("train: ../../elsewhere/images\nval: images/val\nnames: [a]\n", {},
     r"data.yaml: `train: ../../elsewhere/images` leaves the dataset; give the split relative to the data.yaml"),
    ("path: ../other\ntrain: images/train\nval: images/val\nnames: [a]\n", {},
     r"data.yaml: `path: ../other` leaves the dataset; remove `path`"),
    ("train: train.txt\nval: images/val\nnames: [a]\n", {"train.txt": "./images/train/x.jpg\n./images/train/gone.jpg\n"},
     r"train.txt line 2: ./images/train/gone.jpg names images/train/gone.jpg, which is not in the dataset; upload "
     r"the image or remove the line"),
    ("train: train.txt\nval: images/val\nnames: [a]\n", {"train.txt": "images/train/x.jpg\n"},
     r"train.txt line 1: images/train/x.jpg is not relative to the list; .* write it as ./"),
    ("train: train.txt\nval: images/val\nnames: [a]\n", {"train.txt": "./../../x.jpg\n"},
     r"train.txt line 1: ./../../x.jpg leaves the dataset"),
    ("train: images/train\nval: images/val\nnc: 2\nnames: [a]\n", {},
     r"data.yaml: `nc: 2` disagrees with the 1 classes in `names` \(a\); ultralytics refuses such a file"),
    ("train: images\nval: images/val\nnames: [a]\n", {},
     r"data.yaml: images/val/y.jpg is in both train and val; an image in two splits leaks"),
    ("train: images/train\nval: images/val\nnames: [a]\nmodalities: [thermal]\n", {},
     r"data.yaml: `modalities` must map each modality to glob patterns"),
])
def test_what_ultralytics_would_misread_is_refused_naming_the_key_or_line(
        tmp_path: Path, data_yaml: str, extra: dict[str, str], message: str, capsys: pytest.CaptureFixture):
    _sample(tmp_path, "images/train/x.jpg", 1)
    _sample(tmp_path, "images/val/y.jpg", 2)
    _write(tmp_path, "data.yaml", data_yaml)
    for key, text in extra.items():
        _write(tmp_path, key, text)
    with pytest.raises(UserError, match=message):
        validate_dataset(str(tmp_path))
    assert main(["dataset", "validate", "--source", str(tmp_path)]) == 2
    assert "data.yaml" in capsys.readouterr().err or extra


def test_an_absolute_path_in_data_yaml_names_the_machine_that_wrote_it_and_is_ignored(tmp_path: Path):
    coco_style(tmp_path)
    spec = yaml.safe_load((tmp_path / "data.yaml").read_text())
    _write(tmp_path, "data.yaml", yaml.safe_dump({"path": "/home/someone/datasets/pogona", **spec}))
    assert validate_dataset(str(tmp_path)).usable


def test_a_data_yaml_path_below_its_folder_is_the_root(tmp_path: Path):
    coco_style(tmp_path / "inner")
    (tmp_path / "inner" / "data.yaml").rename(tmp_path / "data.yaml")
    spec = yaml.safe_load((tmp_path / "data.yaml").read_text())
    _write(tmp_path, "data.yaml", yaml.safe_dump({"path": "inner", **spec}))
    result = validate_dataset(str(tmp_path), tmp_path.parent / "manifest.json")
    assert result.usable, result.errors
    assert {split: len(keys) for split, keys in _split_images(result.manifest).items()} == {"train": 3, "val": 2}
    assert result.manifest.sources == {"train": ("inner/images/train2017",), "val": ("inner/images/val2017",)}


def test_a_split_entry_that_names_nothing_is_an_empty_split_named_in_the_report(tmp_path: Path):
    coco_style(tmp_path)
    _write(tmp_path, "data.yaml", "train: images/training\nval: images/val2017\nnames: [pogona_head]\n")
    result = validate_dataset(str(tmp_path))
    assert not result.usable and result.errors == [
        f"{(tmp_path / 'images/training').as_uri()}: the train split has no images"]
