"""The RAM cache decision: decoded size as ultralytics holds it, and the pod's cgroup limit, not the host's memory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from components.errors import UserError
from components.training.image_cache import GIB, CacheBudget, choose_cache, decoded_bytes, memory_limit

NO_ROOM_FOR_TRAINING = CacheBudget(headroom=0.5, training_bytes=0, worker_bytes=0)


def _images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, size in enumerate(sizes):
        path = folder / f"{index}.jpg"
        Image.new("RGB", size, (90, 120, 60)).save(path)
        paths.append(path)
    return paths


def _limit(tmp_path: Path, text: str, name: str = "memory.max") -> tuple[Path, ...]:
    path = tmp_path / "cgroup" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return (path,)


def test_the_estimate_is_what_ultralytics_holds_in_ram_for_the_split(tmp_path: Path):
    from components.runtime.yolo_env import offline_ultralytics

    offline_ultralytics()
    from ultralytics.data.dataset import YOLODataset

    images = _images(tmp_path / "images" / "train", [(200, 100), (97, 131), (64, 64), (300, 299)])
    dataset = YOLODataset(img_path=str(tmp_path / "images" / "train"), imgsz=96, augment=False,
                          data={"names": {0: "pogona_head"}, "channels": 3})
    held = sum(dataset.load_image(index)[0].nbytes for index in range(len(dataset)))
    assert decoded_bytes(images, 96) == held


def test_the_estimate_extrapolates_from_a_sample_spread_over_the_split(tmp_path: Path):
    images = _images(tmp_path, [(160, 120)] * 20)
    assert decoded_bytes(images, 80, sample=4) == decoded_bytes(images, 80) == 20 * 80 * 60 * 3
    assert decoded_bytes([], 640) == 0


def test_the_cgroup_limit_is_read_from_v2_or_v1_and_max_or_huge_means_none(tmp_path: Path):
    assert memory_limit(_limit(tmp_path / "v2", str(3 * GIB))) == 3 * GIB
    assert memory_limit(_limit(tmp_path / "v1", str(2 * GIB), "memory.limit_in_bytes")) == 2 * GIB
    assert memory_limit(_limit(tmp_path / "max", "max")) is None
    assert memory_limit(_limit(tmp_path / "huge", "9223372036854771712")) is None  # v1's "unlimited"
    assert memory_limit((tmp_path / "absent",)) is None
    with pytest.raises(UserError, match="memory.max: expected a byte count or 'max'"):
        memory_limit(_limit(tmp_path / "bad", "lots"))


def test_auto_caches_in_ram_only_when_the_images_fit_the_pod_limit(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture):
    images = _images(tmp_path / "images", [(640, 480)] * 10)
    size = decoded_bytes(images, 640)
    caplog.set_level(logging.INFO, logger="pogona")
    roomy = choose_cache("auto", images, 640, workers=0, budget=NO_ROOM_FOR_TRAINING,
                         limit_files=_limit(tmp_path / "roomy", str(2 * size)))
    tight = choose_cache("auto", images, 640, workers=0, budget=NO_ROOM_FOR_TRAINING,
                         limit_files=_limit(tmp_path / "tight", str(size)))  # no room for the 50% headroom
    assert (roomy.setting, tight.setting) == ("ram", False)
    assert "cgroup memory limit" in tight.reason
    assert [message.split(" (")[0] for message in caplog.messages] == ["image cache: ram", "image cache: none"]


def test_training_memory_counts_against_the_limit(tmp_path: Path):
    images = _images(tmp_path / "images", [(640, 480)] * 10)
    limit = _limit(tmp_path, str(2 * decoded_bytes(images, 640) + GIB))
    assert choose_cache("auto", images, 640, workers=2, limit_files=limit,
                        budget=CacheBudget(training_bytes=GIB // 2, worker_bytes=GIB // 8)).setting == "ram"
    assert choose_cache("auto", images, 640, workers=2, limit_files=limit,
                        budget=CacheBudget(training_bytes=GIB, worker_bytes=GIB // 8)).setting is False


def test_workers_each_hold_a_copy_when_shared_memory_is_too_small_and_each_gpu_its_own(tmp_path: Path):
    images = _images(tmp_path / "images", [(640, 480)] * 10)
    limit = _limit(tmp_path, str(5 * decoded_bytes(images, 640) // 2))  # one copy with 50% headroom, not two

    def setting(workers: int, shared_memory: Path, ranks: int = 1) -> str | bool:
        return choose_cache("auto", images, 640, workers=workers, ranks=ranks, budget=NO_ROOM_FOR_TRAINING,
                            limit_files=limit, shared_memory=shared_memory).setting

    assert setting(4, tmp_path) == "ram"  # tmp_path's filesystem has room to share these few MB
    assert setting(4, Path("/proc")) is False  # a filesystem with no free space, as a full /dev/shm
    assert setting(0, Path("/proc")) == "ram"  # no workers, nothing to copy
    assert setting(4, tmp_path / "no-shm") == "ram"  # no /dev/shm: ultralytics copies nothing
    assert setting(0, tmp_path, ranks=2) is False  # DDP: each GPU's process caches its own


def test_explicit_settings_pass_through_and_anything_else_is_refused_naming_the_parameter(tmp_path: Path):
    assert [choose_cache(name, [], 640, 0).setting for name in ("ram", "disk", "none", "RAM")] == [
        "ram", "disk", False, "ram"]
    with pytest.raises(UserError, match="cache 'memory': choose from auto, ram, disk, none"):
        choose_cache("memory", [], 640, 0)
