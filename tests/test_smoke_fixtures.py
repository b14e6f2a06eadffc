from components.storage import open_store


def test_s3_fixture_round_trip(s3_bucket):
    store = open_store(s3_bucket + "/prefix")
    store.put_json("a/b.json", {"x": 1})
    assert [o.key for o in store.list()] == ["a/b.json"]
    assert store.get_json("a/b.json") == {"x": 1}
