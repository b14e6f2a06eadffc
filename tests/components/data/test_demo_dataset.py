import io
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from components.config import MODALITIES
from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.errors import UserError
from components.storage import open_store
from components.data.validate import validate_dataset
from pipelines.cli import main


def _listing(uri: str) -> dict[str, str]:
    return {o.key: o.etag for o in open_store(uri).list()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path):
    spec = DemoSpec(images=10, size=48)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate_demo_dataset(str(tmp_path / name), DemoSpec(spec.images, seed, spec.size), progress=False)
    assert _listing(str(tmp_path / "a")) == _listing(str(tmp_path / "b"))
    assert _listing(str(tmp_path / "a")) != _listing(str(tmp_path / "c"))


def test_cli_demo_writes_a_usable_dataset_of_the_asked_size(s3_bucket: str, capsys):
    out = f"{s3_bucket}/datasets/demo"
    assert main(["dataset", "demo", "--out", out, "--images", "20", "--size", "64", "--seed", "1"]) == 0
    assert "16 train, 4 val" in capsys.readouterr().out
    result = validate_dataset(out)
    assert result.usable, result.errors
    assert {m for groups in result.counts.values() for m in groups} == {"thermal", "visible"}
    assert sum(g.backgrounds for groups in result.counts.values() for g in groups.values()) > 0
    first_image = next(e.key for e in result.manifest.entries if e.role == "image")
    assert Image.open(io.BytesIO(open_store(out).get_bytes(first_image))).size == (64, 64)


@pytest.mark.parametrize("val_fraction", [0.5, 0.25, 0.2])
def test_each_modality_gets_its_share_of_val_the_same_for_a_seed(tmp_path: Path, val_fraction: float):
    spec = DemoSpec(images=40, size=32, seed=3, val_fraction=val_fraction)
    splits = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_demo_dataset(str(tmp_path / name), replace(spec, seed=seed), progress=False)
        splits.append({path.name: path.parent.parent.name for path in (tmp_path / name / "images").rglob("*.jpg")})
    val = Counter(path.parent.name for path in (tmp_path / "a" / "images" / "val").rglob("*.jpg"))
    per_modality = spec.images // len(MODALITIES)
    assert val == {modality: round(per_modality * val_fraction) for modality in MODALITIES}
    assert splits[0] == splits[1]
    assert splits[0] != splits[2]


def test_a_val_fraction_outside_0_to_1_is_refused(tmp_path: Path):
    with pytest.raises(UserError, match="val_fraction 0 is not between 0 and 1"):
        generate_demo_dataset(str(tmp_path), DemoSpec(images=4, val_fraction=0), progress=False)
    assert not any(tmp_path.iterdir())
