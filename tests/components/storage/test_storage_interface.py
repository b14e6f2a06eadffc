"""The contract every backend keeps, run on the folder and the S3 backend alike."""

from pathlib import Path

import pytest

from components.storage import PreconditionFailed, StorageError, md5_etag, open_store
from components.storage.interface import NoSuchObject


@pytest.fixture(params=["folder", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/some/prefix"


def test_round_trip_on_both_backends(store_uri: str, tmp_path: Path):
    store = open_store(store_uri)
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 5000)
    info = store.upload_file(source, "a/b/file.bin")
    store.put_json("a/meta.json", {"x": 1})

    assert {o.key for o in store.list()} == {"a/b/file.bin", "a/meta.json"}
    assert [o.key for o in store.list("a/b/")] == ["a/b/file.bin"]
    assert info.size == 5000 and info.etag == md5_etag(source)
    assert store.head("a/b/file.bin") == info and store.head("missing") is None
    assert store.get_json("a/meta.json") == {"x": 1}
    dest = tmp_path / "out" / "file.bin"
    assert store.download("a/b/file.bin", dest, info) == 5000 and dest.read_bytes() == source.read_bytes()
    store.delete("a/meta.json")
    assert not store.exists("a/meta.json")


def test_conditional_writes_guard_a_pointer(store_uri: str):
    store = open_store(store_uri)
    first = store.put_json("pointer.json", {"run": 1}, if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_json("pointer.json", {"run": 2}, if_none_match=True)
    store.put_json("pointer.json", {"run": 2}, if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        store.put_json("pointer.json", {"run": 3}, if_match=first.etag)
    assert store.get_json("pointer.json") == {"run": 2}


def test_download_refuses_an_object_that_changed_since_the_snapshot(store_uri: str, tmp_path: Path):
    store = open_store(store_uri)
    old = store.put_bytes("x.txt", b"old")
    store.put_bytes("x.txt", b"new content")
    with pytest.raises(StorageError, match="x.txt.*changed since the snapshot"):
        store.download("x.txt", tmp_path / "x.txt", old)
    assert not (tmp_path / "x.txt").exists()


def test_reading_a_missing_json_document_is_none_only_when_asked(store_uri: str):
    store = open_store(store_uri)
    assert store.get_json("models/m/production.json", missing_ok=True) is None
    with pytest.raises(NoSuchObject, match="production.json"):
        store.get_json("models/m/production.json")
    store.put_json("models/m/production.json", {"run_id": "r1"})
    assert store.get_json("models/m/production.json", missing_ok=True) == {"run_id": "r1"}
