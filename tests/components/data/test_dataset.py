"""A local dataset as the steps read it: split paths from data.yaml, images by modality, refusals naming the file."""

from pathlib import Path

import pytest
import yaml

from components.data.dataset import Dataset, load_dataset
from components.errors import UserError
from components.data.snapshot import parse_key


def test_images_are_grouped_by_modality_exactly_as_validation_counts_them(tmp_path: Path):
    split = tmp_path / "images" / "val"
    names = ("thermal/a.jpg", "visible/night/b.jpg", "thermal_c.jpg", "thermalcam_d.jpg", "e.jpg")
    counted = {name: parse_key(f"images/val/{name}").modality for name in names}
    assert counted == {"thermal/a.jpg": "thermal", "visible/night/b.jpg": "visible", "thermal_c.jpg": "thermal",
                       "thermalcam_d.jpg": "unknown", "e.jpg": "unknown"}
    dataset = Dataset(tmp_path, {0: "pogona_head"}, {"val": split})
    assert {name: dataset.modality(split / name, "val") for name in names} == counted
    listed = Dataset(tmp_path, {0: "pogona_head"}, {"val": tmp_path / "val.txt"})  # judged by folder and name
    assert {name: listed.modality(split / name, "val") for name in names} == {**counted, "visible/night/b.jpg": "unknown"}


def test_a_data_yaml_as_users_write_it_resolves_to_absolute_splits(tmp_path: Path):
    root = tmp_path / "data"
    for image in ("images/train/thermal/a.jpg", "images/train/visible/b.png", "images/val/c.jpg"):
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        (root / image).write_bytes(b"")
    listed = tmp_path / "val.txt"
    listed.write_text(f"{root / 'images/val/c.jpg'}\n\n")
    spec = tmp_path / "spec" / "data.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump({"path": "../data", "train": "images/../images/train", "val": str(listed),
                                    "names": ["pogona_head"]}))

    dataset = load_dataset(spec)
    assert dataset.root == root.resolve() and dataset.names == {0: "pogona_head"}
    assert dataset.splits == {"train": root.resolve() / "images" / "train", "val": listed}
    assert [p.name for p in dataset.images("train")] == ["a.jpg", "b.png"]
    assert dataset.images("val") == [root / "images" / "val" / "c.jpg"]
    written = yaml.safe_load(dataset.write_yaml(tmp_path / "out" / "data.yaml").read_text())
    assert written["train"] == str(root.resolve() / "images" / "train") and Path(written["path"]).is_absolute()


def test_unusable_data_yaml_is_refused_naming_the_file(tmp_path: Path):
    with pytest.raises(UserError, match=f"{tmp_path} has no data.yaml"):
        load_dataset(tmp_path)
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("names: [pogona_head]\n")
    with pytest.raises(UserError, match=f"{tmp_path / 'data.yaml'}: no val split"):
        load_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text("val: [images/a, images/b]\n")
    with pytest.raises(UserError, match="val images .*images/a do not exist"):
        load_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text("val: {images: a}\n")
    with pytest.raises(UserError, match="'val' must be a folder, a .txt list or a list of them"):
        load_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text("nc: 2\nnames: [pogona_head]\n")
    with pytest.raises(UserError, match="`nc: 2` disagrees with the 1 classes in `names` \\(pogona_head\\)"):
        load_dataset(tmp_path)
