from pathlib import Path

import pytest

from components.errors import UserError
from components.storage import ObjectInfo, StorageError, fetch_objects, open_store


def test_fetch_downloads_what_is_missing_keeps_what_matches_and_refuses_what_changed(tmp_path: Path):
    store = open_store(tmp_path / "store")
    listed = [store.put_bytes(f"images/train/{name}.jpg", name.encode() * 100) for name in ("a", "b", "c")]
    dest = tmp_path / "copy"

    first = fetch_objects(store, listed, dest, workers=2, progress=False)
    assert (first.downloaded, first.skipped, first.bytes) == (3, 0, sum(info.size for info in listed))
    assert all((dest / info.key).read_bytes() == store.get_bytes(info.key) for info in listed)

    (dest / listed[0].key).write_bytes(b"torn")
    again = fetch_objects(store, listed, dest, workers=2, progress=False)
    assert (again.downloaded, again.skipped, again.bytes) == (1, 2, listed[0].size)

    store.put_bytes(listed[1].key, b"replaced since it was listed")
    (dest / listed[1].key).unlink()
    with pytest.raises(StorageError, match=r"images/train/b\.jpg changed since the snapshot"):
        fetch_objects(store, [listed[1]], dest, progress=False)
    assert sorted(path.name for path in (dest / "images/train").iterdir()) == ["a.jpg", "c.jpg"]  # no torn copy


def test_fetch_refuses_a_key_that_would_land_outside_the_folder(tmp_path: Path):
    store = open_store(tmp_path / "store")
    with pytest.raises(UserError, match="would land outside"):
        fetch_objects(store, [ObjectInfo("../escape.jpg", 1, "etag")], tmp_path / "copy", progress=False)
    assert not (tmp_path / "escape.jpg").exists()
