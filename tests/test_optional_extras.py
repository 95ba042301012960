"""The optional extras (milvus, ray): without them clsr imports, and the error names the extra."""

import sys

import pytest


def test_without_the_milvus_extra_the_error_says_what_to_install(monkeypatch):
    from clsr.search.milvus import MilvusError, milvus_client

    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(MilvusError, match=r"^the Milvus backend needs .*: pip install 'clsr\[milvus\]'$"):
        milvus_client("x.db")
