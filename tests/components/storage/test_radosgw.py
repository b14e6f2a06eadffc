"""The S3 store against Ceph's radosgw (tests/radosgw.py), a real server that checks signatures and,
in this release (16.2), returns no additional checksums: only its ETags vouch for content."""

import hashlib
from pathlib import Path

import pytest

from components.config import PromotionConfig
from components.publishing.publish import promote
from components.storage import PreconditionFailed, S3Store, StorageError, open_store
from pipelines.cli import main

MIB = 1024 * 1024


def test_a_wrong_secret_is_refused_in_one_line(radosgw_bucket: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert main(["dataset", "validate", "--source", f"{radosgw_bucket}/data"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"{radosgw_bucket}/data" in err and "access denied (SignatureDoesNotMatch)" in err
    with pytest.raises(StorageError, match=r"access denied \(SignatureDoesNotMatch\)"):
        open_store(radosgw_bucket).download("any.bin", Path("unused"))  # the direct, hand-signed GET


def test_large_files_go_up_in_parts_checked_by_their_etag(radosgw_bucket: str, tmp_path: Path):
    store = S3Store(radosgw_bucket, multipart_threshold=5 * MIB, multipart_chunk=5 * MIB)
    source = tmp_path / "weights.pt"
    source.write_bytes(bytes(range(256)) * (11 * MIB // 256 + 3))
    info = store.upload_file(source, "weights/big.pt")
    assert info.etag.endswith("-3") and info.checksum is None  # no full-object CRC32 from radosgw 16.2
    dest = tmp_path / "copy.pt"
    store.download("weights/big.pt", dest, info)
    assert dest.read_bytes() == source.read_bytes()


def test_conditional_writes_as_promotion_makes_them(radosgw_bucket: str):
    store = open_store(radosgw_bucket)
    first = store.put_bytes("models/m/production.json", b"{}", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("models/m/production.json", b"{}", if_none_match=True)
    read = store.head("models/m/production.json")  # the ETag as the server hands it out (quoted by boto3)
    assert read.etag == first.etag
    second = store.put_bytes("models/m/production.json", b'{"run": 2}', if_match=f'"{read.etag}"')
    with pytest.raises(PreconditionFailed):
        store.put_bytes("models/m/production.json", b'{"run": 3}', if_match=read.etag)
    assert store.get_bytes("models/m/production.json") == b'{"run": 2}' and second.etag != first.etag


def test_a_better_run_replaces_the_champion(radosgw_bucket: str):
    store = open_store(radosgw_bucket)
    promotion = PromotionConfig(min_map50=0.1)
    for run_id, map50 in (("first", 0.2), ("second", 0.4)):
        decision, record = promote(store, "m", {"run_id": run_id, "metrics": {"map50": map50, "map50_95": map50}},
                                   promotion)
        assert decision.promote and record["run_id"] == run_id
    assert store.get_json("models/m/production.json")["previous_run_id"] == "first"


@pytest.fixture
def radosgw_faults(radosgw_env, monkeypatch: pytest.MonkeyPatch):
    """The fault proxy (tests/faults.py) in front of radosgw; it forwards the client's signed headers."""
    from faults import FaultProxy

    with FaultProxy(radosgw_env.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        yield proxy


def test_a_same_size_altered_object_is_caught_without_additional_checksums(radosgw_bucket: str, radosgw_faults,
                                                                           tmp_path: Path):
    store = open_store(radosgw_bucket)
    data = b"weights" * 1000
    info = store.put_bytes("run/best.pt", data)
    assert info.checksum is None and store.head("run/best.pt").checksum is None  # what radosgw 16.2 lacks
    radosgw_faults.inject_on("GET", "best.pt", "corrupt")  # one byte flipped, the size unchanged
    with pytest.raises(StorageError, match="MD5 ETag"):
        store.download("run/best.pt", tmp_path / "best.pt", info)
    assert not (tmp_path / "best.pt").exists()

    recorded = store.head("run/best.pt")
    store.put_bytes("run/best.pt", bytes([data[0] ^ 1]) + data[1:])  # replaced in place, same size
    replaced = store.head("run/best.pt")
    snapshot = type(replaced)(replaced.key, replaced.size, replaced.etag, sha256=hashlib.sha256(data).hexdigest())
    assert replaced.size == recorded.size and replaced.etag != recorded.etag
    with pytest.raises(StorageError, match="sha256"):
        store.download("run/best.pt", tmp_path / "best.pt", snapshot)
