import pytest

from components.storage import StorageError, open_store


def test_unknown_scheme_is_refused():
    with pytest.raises(StorageError, match="gs://bucket"):
        open_store("gs://bucket/x")
