"""The whole pipeline through kfp.local with its dataset and its store on Ceph's radosgw, publishing
twice: the second run must replace the champion with a conditional write that radosgw accepts."""

from pathlib import Path

import pytest

from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.data.push import push_dataset
from components.storage import open_store
from pipelines.local import run_local

# The sanity gate as test_local_run.py runs it (its loss falls on this seeded data); training one tiny epoch.
TINY = dict(model="yolo11n", epochs=1, patience=1, imgsz=64, batch=16.0, sanity_epochs=3, sanity_imgsz=96,
            sanity_max_images=80, sanity_min_loss_drop=0.0, sanity_min_map50=0.0, min_map50=0.0,
            export_formats="")
POINTER = "models/pogona-head/production.json"


@pytest.mark.slow
def test_a_better_second_run_replaces_the_champion_on_radosgw(radosgw_bucket: str, tmp_path: Path):
    dataset = tmp_path / "dataset"
    generate_demo_dataset(str(dataset), DemoSpec(images=80, size=96), progress=False)
    push_dataset(dataset, f"{radosgw_bucket}/datasets/demo")
    source, store_uri = f"{radosgw_bucket}/datasets/demo", f"{radosgw_bucket}/store"
    store = open_store(store_uri)

    first = run_local(store=store_uri, dataset=source, overrides=TINY, run_id="first", work_dir=tmp_path / "kfp")
    assert store.get_json(POINTER)["run_id"] == "first"  # the pointer's first write: If-None-Match
    # One CPU epoch at 64 px scores 0 every time, so no tiny run can beat it: the champion's record is
    # made weaker than any real score instead, and the second run must win by the rules of `decide`.
    champion = store.get_json(POINTER)
    store.put_json(POINTER, {**champion, "metrics": {**champion["metrics"], "map50_95": -1.0}})

    second = run_local(store=store_uri, dataset=source, overrides={**TINY, "skip_if_unchanged": False},
                       run_id="second", work_dir=tmp_path / "kfp")

    champion = store.get_json(POINTER)  # replaced with If-Match on the ETag radosgw handed out
    assert not second.skipped and champion["run_id"] == "second" and champion["previous_run_id"] == "first"
    assert champion["metrics"] == second.metrics["metrics"] and first.metrics["metrics"]["map50_95"] >= 0
    assert store.exists("runs/second/train/weights/best.pt")
