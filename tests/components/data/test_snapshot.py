import json
from dataclasses import replace
from pathlib import Path

import pytest

from components.errors import UserError
from components.data.snapshot import Manifest, ManifestEntry, fingerprint, parse_key


def _manifest() -> Manifest:
    entries = [ManifestEntry("labels/train/a.txt", 10, "e2", "train", "unknown", "label"),
               ManifestEntry("images/train/a.jpg", 100, "e1", "train", "unknown", "image")]
    return Manifest.build("s3://bucket/datasets/pogona", {0: "pogona_head"}, entries)


def test_manifest_survives_a_round_trip(tmp_path: Path):
    manifest = _manifest()
    manifest.save(tmp_path / "manifest.json")
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded == manifest
    assert [e.key for e in loaded.entries] == ["images/train/a.jpg", "labels/train/a.txt"]
    assert loaded.names == {0: "pogona_head"} and loaded.splits == ["train"]


def test_fingerprint_follows_content_not_order_or_time():
    manifest = _manifest()
    reordered = Manifest.build(manifest.source, manifest.names, list(reversed(manifest.entries)))
    assert reordered.fingerprint == manifest.fingerprint
    changed = [replace(manifest.entries[0], etag="other"), manifest.entries[1]]
    assert Manifest.build(manifest.source, manifest.names, changed).fingerprint != manifest.fingerprint


def test_with_content_hashes_the_fingerprint_ignores_how_the_bucket_computes_etags():
    hashed = [replace(entry, sha256=f"{index:064x}") for index, entry in enumerate(_manifest().entries)]
    manifest = Manifest.build("s3://a", {0: "pogona_head"}, hashed)
    opaque = [replace(entry, etag="kms-opaque") for entry in hashed]  # the same bytes in an SSE-KMS bucket
    assert Manifest.build("s3://b", {0: "pogona_head"}, opaque).fingerprint == manifest.fingerprint
    edited = [replace(hashed[0], sha256="f" * 64), hashed[1]]
    assert Manifest.build("s3://a", {0: "pogona_head"}, edited).fingerprint != manifest.fingerprint


def test_a_manifest_written_before_content_hashes_and_class_names_still_loads(tmp_path: Path):
    """Champions' and resumed runs' manifests from before: the fingerprint covered the entries' ETags alone."""
    import hashlib

    manifest = _manifest()
    legacy = hashlib.sha256(b"".join(
        "\t".join(str(v) for v in (e.key, e.size, e.etag, e.split, e.modality, e.role)).encode() + b"\n"
        for e in manifest.entries)).hexdigest()
    document = json.loads(json.dumps({**manifest.__dict__, "fingerprint": legacy}, default=lambda o: o.__dict__))
    for entry in document["entries"]:
        del entry["sha256"]
    del document["errors"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    loaded = Manifest.load(tmp_path / "old.json")
    assert loaded.fingerprint == legacy and loaded.entries == manifest.entries
    assert loaded.split_sources == {"train": ("images/train",)} and loaded.modalities is None  # the contract layout


def test_split_sources_and_stated_modalities_survive_a_round_trip_outside_the_fingerprint(tmp_path: Path):
    plain = _manifest()
    stated = Manifest.build(plain.source, plain.names, list(plain.entries), sources={"train": ("a/images", "t.txt")},
                            modalities={"thermal": ["*/ir/*"]})
    stated.save(tmp_path / "manifest.json")
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded == stated and loaded.split_sources == {"train": ("a/images", "t.txt")}
    assert loaded.fingerprint == plain.fingerprint  # entries carry each image's split and modality already


def test_a_manifest_with_unreadable_modalities_is_refused_in_one_line(tmp_path: Path):
    path = tmp_path / "manifest.json"
    _manifest().save(path)
    document = json.loads(path.read_text())
    document["modalities"] = ["thermal"]
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match="manifest.json is not a snapshot manifest: .*`modalities` must map"):
        Manifest.load(path)


@pytest.mark.parametrize("edit", [lambda d: d["entries"][0].update(size=1), lambda d: d["names"].update({"0": "x"})],
                         ids=["entry", "class name"])
def test_a_hand_edited_manifest_is_refused(tmp_path: Path, edit):
    path = tmp_path / "manifest.json"
    _manifest().save(path)
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match="fingerprint"):
        Manifest.load(path)


def test_missing_or_foreign_manifest_names_the_file(tmp_path: Path):
    with pytest.raises(UserError, match="nope.json does not exist"):
        Manifest.load(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="other.json is not a snapshot manifest"):
        Manifest.load(tmp_path / "other.json")


@pytest.mark.parametrize("key, role, split, modality", [
    ("images/train/thermal/x.jpg", "image", "train", "thermal"),
    ("labels/val/visible/x.txt", "label", "val", "visible"),
    ("images/test/thermal_0001.PNG", "image", "test", "thermal"),
    ("images/train/cam2/visible_7.jpeg", "image", "train", "visible"),
    ("images/train/IMG_1.jpg", "image", "train", "unknown"),
])
def test_keys_are_placed_by_folder_or_prefix(key: str, role: str, split: str, modality: str):
    place = parse_key(key)
    assert (place.role, place.split, place.modality) == (role, split, modality)


@pytest.mark.parametrize("key", ["data.yaml", "images/holdout/x.jpg", "labels/train/x.json", "images/train/x.gif"])
def test_other_objects_are_not_dataset_entries(key: str):
    assert parse_key(key) is None


def test_a_manifest_with_content_hashes_and_its_fingerprint_blanked_is_refused(tmp_path: Path):
    hashed = _manifest()
    hashed = Manifest.build(hashed.source, hashed.names, [replace(e, sha256="ab" * 32) for e in hashed.entries])
    path = tmp_path / "manifest.json"
    hashed.save(path)
    document = json.loads(path.read_text())
    document["fingerprint"] = ""
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match="fingerprint"):
        Manifest.load(path)


def test_the_fingerprint_of_a_snapshot_is_the_one_earlier_releases_recorded():
    """Attempt records and manifests keep fingerprints across releases: a new formula would retrain every model."""
    entries = [ManifestEntry("labels/train/thermal/a.txt", 9, "etag-b", "train", "thermal", "label", "cd" * 32),
               ManifestEntry("images/train/thermal/a.jpg", 3, "etag-a", "train", "thermal", "image", "ab" * 32)]
    assert fingerprint(entries, {0: "pogona_head"}) == \
        "7af70fa678dd402f81f5303acf7db55f5ee82addd88f85d866f9bb77f561a79a"
