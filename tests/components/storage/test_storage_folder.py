from pathlib import Path

import pytest

from components.storage import StorageError, open_store


def test_folder_store_refuses_keys_outside_its_root(tmp_path: Path):
    store = open_store(f"file://{tmp_path}/root")
    with pytest.raises(StorageError, match=r"\.\./escape"):
        store.put_bytes("../escape.txt", b"x")
    assert not (tmp_path / "escape.txt").exists()


def test_a_folder_store_of_symlinks_reads_through_them_but_keys_never_climb_out(tmp_path: Path):
    cache = tmp_path / "repo" / ".dvc" / "cache"  # DVC and git-annex keep content outside the data folder
    cache.mkdir(parents=True)
    (cache / "ab12").write_bytes(b"image bytes")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    root = tmp_path / "repo" / "data"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").symlink_to(Path("../../.dvc/cache/ab12"))
    store = open_store(root)
    assert [(o.key, o.size) for o in store.list()] == [("images/a.jpg", 11)]
    assert store.get_bytes("images/a.jpg") == b"image bytes"
    assert store.download("images/a.jpg", tmp_path / "copy.jpg", store.head("images/a.jpg")) == 11
    for key in ("../secret.txt", "images/../../secret.txt", "../../secret.txt"):
        with pytest.raises(StorageError, match="points outside the store"):
            store.get_bytes(key)


def test_a_folder_store_not_created_yet_lists_nothing_and_never_its_parent(tmp_path: Path):
    (tmp_path / "beside.jpg").write_bytes(b"not in the store")
    store = open_store(tmp_path / "store")
    assert list(store.list()) == [] and list(store.list("images/")) == []
    store.put_bytes("images/a.jpg", b"a")
    assert [o.key for o in store.list()] == ["images/a.jpg"]

