import os
from pathlib import Path

import pytest

from clsr.data import data_root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    assert (root / "scifact" / "corpus.jsonl").exists(), (
        f"the shared test collections are missing at {root}; set CLSR_DATA to the folder holding scifact/")
    return root


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Tests must not read or write the user's embedding cache.
    os.environ["CLSR_CACHE"] = str(tmp_path_factory.mktemp("clsr-cache"))


def _bm25_run(tmp_path_factory, collection: Path, name: str) -> Path:
    from clsr.data import iter_corpus, load_topics
    from clsr.evaluate import write_run
    from clsr.index import build_bm25_index
    from clsr.search import Bm25Searcher

    work = tmp_path_factory.mktemp(name)
    build_bm25_index(iter_corpus(collection), work / "index")
    run = Bm25Searcher(work / "index").batch_search(load_topics(collection, "test"), k=1000, threads=2)
    write_run(run, work / "run.trec", tag="bm25")
    return work / "run.trec"


@pytest.fixture(scope="session")
def scifact_bm25_run(tmp_path_factory, shared_data) -> Path:
    """A BM25 run on all of SciFact (about 15 s); its index sits beside it."""
    return _bm25_run(tmp_path_factory, shared_data / "scifact", "scifact-bm25")


@pytest.fixture(scope="session")
def dl19_subset_bm25_run(tmp_path_factory, shared_data) -> Path:
    return _bm25_run(tmp_path_factory, shared_data / "msmarco-passage" / "subset-dl19-5k", "dl19-bm25")
