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


class ScifactSlice:
    """300 SciFact passages (the judged ones for the first 150 test queries, plus others), MiniLM fp32."""

    def __init__(self):
        from clsr.data import load_corpus, load_qrels, load_topics
        from clsr.encode.dense import DenseEncoder, encoder_config

        self.qrels = dict(list(load_qrels("scifact", "test").items())[:150])
        judged = {d for j in self.qrels.values() for d in j}
        corpus = load_corpus("scifact")
        self.documents = [d for d in corpus if d.id in judged]
        self.documents += [d for d in corpus if d.id not in judged][:300 - len(self.documents)]
        self.doc_ids = [d.id for d in self.documents]
        self.topics = {q: t for q, t in load_topics("scifact", "test").items() if q in self.qrels}
        self.encoder = DenseEncoder(encoder_config("minilm"), dtype="fp32")
        self.doc_vectors = self.encoder.encode_documents([d.text for d in self.documents])
        self.query_vectors = self.encoder.encode_queries(list(self.topics.values()))


@pytest.fixture(scope="session")
def scifact_slice(shared_data) -> ScifactSlice:
    return ScifactSlice()


@pytest.fixture(scope="session")
def slice_concept_index(tmp_path_factory, scifact_slice) -> Path:
    """A doc-K 64 concept index of the 300-passage SciFact slice (a few seconds), shared by the explorer's tests.

    Its manifest's source is SciFact itself, so passage texts resolve through ``$CLSR_DATA``.
    """
    from clsr.index import build_concept_index
    from clsr.sae.model import TopKSae, default_sae_path

    index_dir = tmp_path_factory.mktemp("slice-concepts") / "index"
    build_concept_index(scifact_slice.doc_ids, scifact_slice.doc_vectors, index_dir,
                        sae=TopKSae.load_from_disk(default_sae_path()), sae_path=default_sae_path(),
                        encoder=scifact_slice.encoder.config.to_dict(), encoding=scifact_slice.encoder.encoding,
                        doc_k=64, source="scifact", progress=False)
    return index_dir


@pytest.fixture
def cli_error():
    """Run `clsr ARGV` expecting failure; returns its one-line message (asserted to be one line)."""
    from clsr.cli import main as clsr

    def run(argv) -> str:
        with pytest.raises(SystemExit) as exit_info:
            clsr(argv)
        message = str(exit_info.value.code)
        assert message.startswith(f"clsr {argv[0]}: error: ") and "\n" not in message
        return message

    return run


@pytest.fixture
def stock_pyserini_search():
    """Run unmodified ``python -m pyserini.search.lucene --impact`` (under clsr.jvm) on pre-encoded queries."""
    import subprocess
    import sys

    from clsr.jvm import java_environment

    def run(index, topics, encoded_queries, output, hits: int) -> None:
        stock = subprocess.run(
            [sys.executable, "-m", "clsr.jvm", "pyserini.search.lucene", "--index", str(index), "--topics", str(topics),
             "--impact", "--encoder", str(encoded_queries), "--min-idf", "-1", "--hits", str(hits),
             "--output", str(output)],
            capture_output=True, text=True, env=java_environment(), timeout=300)
        assert stock.returncode == 0, stock.stderr[-2000:]

    return run
