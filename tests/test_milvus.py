"""The Milvus backend on real Milvus Lite: the same run as Lucene, refusals, atomic exports.

Marked ``scale``: they need the milvus extra (``make test-scale``).
"""


import numpy as np
import pytest

from clsr.evaluate import trec_eval_order
from clsr.sae.config import SaeConfig
from clsr.sae.model import SaeMismatchError, TopKSae

SEARCH_OPTIONS = {"dtype": "fp32"}  # the slice's documents were encoded in fp32
DEPTH = 1000


@pytest.fixture(scope="module")
def exported(tmp_path_factory, slice_concept_index):
    pytest.importorskip("pymilvus")
    from clsr.search.milvus import export_index

    uri = str(tmp_path_factory.mktemp("milvus") / "clsr.db")
    record = export_index(slice_concept_index, uri, "slice", batch_size=128, progress=False)
    return uri, record


@pytest.fixture(scope="module")
def milvus_searcher(exported):
    from clsr.search.milvus import MilvusSearcher

    return MilvusSearcher(exported[0], "slice", **SEARCH_OPTIONS)


@pytest.fixture(scope="module")
def lucene_searcher(slice_concept_index):
    from clsr.search import ClsrSearcher

    return ClsrSearcher(slice_concept_index, **SEARCH_OPTIONS)


def lucene_run(searcher, topics, k=DEPTH):
    """Lucene's run cut by the project's tie rule: searched deeper, ordered as trec_eval, cut at k."""
    return {q: trec_eval_order(hits)[:k] for q, hits in searcher.batch_search(topics, k=k + 100).items()}


pytestmark = pytest.mark.scale


def test_export_records_the_index_manifest(exported, slice_concept_index):
    from clsr.index import read_manifest

    uri, record = exported
    manifest = read_manifest(slice_concept_index)
    assert record["documents"] == 300 == manifest.documents
    assert record["index_manifest"]["sae"]["sha256"] == manifest.sae.sha256
    assert record["index_manifest"]["doc_quantizer"] == manifest.doc_quantizer
    assert record["index_manifest"]["doc_k"] == 64


def test_milvus_run_equals_lucene_run_same_ranking_and_scores(milvus_searcher, lucene_searcher, scifact_slice):
    topics = scifact_slice.topics
    lucene = lucene_run(lucene_searcher, topics)
    milvus = milvus_searcher.batch_search(topics, k=DEPTH)
    assert list(milvus) == list(lucene)
    for qid in topics:
        assert [tuple(h) for h in milvus[qid]] == [tuple(h) for h in lucene[qid]], qid
    assert sum(len(hits) for hits in milvus.values()) > 100 * len(topics)  # deep runs, not a few hits
    assert all(float(s).is_integer() for hits in milvus.values() for _, s in hits)


def test_document_vectors_are_the_lucene_impacts(milvus_searcher, lucene_searcher, scifact_slice):
    for docid in scifact_slice.doc_ids[:50]:
        assert milvus_searcher.doc_vector(docid) == lucene_searcher.doc_vector(docid)
    np.testing.assert_array_equal(milvus_searcher.reconstructions(scifact_slice.doc_ids[:20]),
                                  lucene_searcher.reconstructions(scifact_slice.doc_ids[:20]))


def test_hits_explanations_and_steering_match_lucene(exported, milvus_searcher, lucene_searcher, scifact_slice):
    from clsr.interpret.explain import explain
    from clsr.search import ClsrSearcher
    from clsr.search.milvus import MilvusSearcher

    query = list(scifact_slice.topics.values())[5]
    hits = milvus_searcher.search(query, 10)
    lucene_hits = {h.docid: h for h in lucene_searcher.search(query, 200)}
    for rank, hit in enumerate(hits, 1):
        assert hit.score == sum(c.contribution for c in hit.concepts) == lucene_hits[hit.docid].score
        assert hit.concepts == lucene_hits[hit.docid].concepts
        explanation = explain(milvus_searcher, query, hit.docid)
        assert explanation["rank"] == rank and explanation["score"] == hit.score
        assert explanation == {**explain(lucene_searcher, query, hit.docid), "rank": rank}

    strongest = int(hits[0].concepts[0].concept[1:])
    steering = {strongest: 0.0, int(hits[5].concepts[0].concept[1:]): 3.0}
    steered_milvus = MilvusSearcher(exported[0], "slice", steering=steering, **SEARCH_OPTIONS)
    steered_lucene = ClsrSearcher(exported[1]["source_index"], steering=steering, **SEARCH_OPTIONS)
    topics = {"q": query}
    assert steered_milvus.batch_search(topics, k=DEPTH) == lucene_run(steered_lucene, topics)
    assert steered_milvus.batch_search(topics, k=DEPTH) != milvus_searcher.batch_search(topics, k=DEPTH)


@pytest.mark.parametrize("mode", ["rerank", "full"])
def test_hybrid_on_milvus_equals_hybrid_on_lucene(milvus_searcher, slice_concept_index, scifact_slice, mode):
    from clsr.fusion import HybridSearcher

    topics = dict(list(scifact_slice.topics.items())[:20])
    on_milvus = HybridSearcher(sparse=milvus_searcher, mode=mode, alpha=0.5, depth=DEPTH)
    on_lucene = HybridSearcher(slice_concept_index, mode=mode, alpha=0.5, depth=DEPTH, **SEARCH_OPTIONS)
    milvus_run, lucene_run_ = on_milvus.batch_search(topics, k=10), on_lucene.batch_search(topics, k=10)
    for qid in topics:
        # Dense scores from Milvus's FLAT search and FAISS differ in the last float32 bits (full mode).
        assert [d for d, _ in milvus_run[qid]] == [d for d, _ in lucene_run_[qid]], qid
        np.testing.assert_allclose([s for _, s in milvus_run[qid]], [s for _, s in lucene_run_[qid]], atol=1e-5)


def test_another_sae_and_an_unknown_collection_are_refused(exported, tmp_path):
    from clsr.encode.dense import encoder_config
    from clsr.search.milvus import MilvusError, MilvusSearcher

    uri, _ = exported
    other = TopKSae(SaeConfig(384, 512, 128, encoder=encoder_config("minilm").to_dict()))
    other.save_to_disk(tmp_path / "other-sae")
    with pytest.raises(SaeMismatchError, match=r"(?s)Milvus collection 'slice' .*minilm-l6-v2.*given .*other-sae"):
        MilvusSearcher(uri, "slice", sae_path=tmp_path / "other-sae")
    with pytest.raises(MilvusError, match=r"^no collection 'nope' at .*clsr.db; export one with") as error:
        MilvusSearcher(uri, "nope")
    assert "\n" not in str(error.value)


def test_an_interrupted_export_leaves_nothing_that_looks_complete(slice_concept_index, tmp_path):
    from clsr.search.milvus import MilvusError, MilvusSearcher, collection_names, export_index, milvus_client

    uri = str(tmp_path / "interrupted.db")
    with pytest.raises(KeyboardInterrupt):
        export_index(slice_concept_index, uri, "slice", batch_size=100, progress=False, stop_after=200)
    assert collection_names(uri) == []
    with pytest.raises(MilvusError, match="an export of it was interrupted"):
        MilvusSearcher(uri, "slice")
    # The next export starts afresh and drops what the interrupted one left.
    export_index(slice_concept_index, uri, "slice", batch_size=100, progress=False)
    assert collection_names(uri) == ["slice"]
    assert [c for c in milvus_client(uri).list_collections() if c.startswith("slice")] != []
    assert len([c for c in milvus_client(uri).list_collections() if c.startswith("slice__")]) == 1
    with pytest.raises(MilvusError, match="already exists"):
        export_index(slice_concept_index, uri, "slice", progress=False)
    # An interrupted overwrite keeps the complete collection it was replacing.
    with pytest.raises(KeyboardInterrupt):
        export_index(slice_concept_index, uri, "slice", overwrite=True, progress=False, batch_size=100, stop_after=100)
    searcher = MilvusSearcher(uri, "slice")
    assert searcher.client.get_collection_stats(searcher.collection)["row_count"] == 300


def test_cli_export_and_search_give_lucene_run(slice_concept_index, tmp_path, capsys):
    from clsr.cli import main as clsr
    from clsr.evaluate import read_run

    uri = str(tmp_path / "cli.db")
    clsr(["export", "milvus", "--index", str(slice_concept_index), "--uri", uri, "--collection", "scifact_slice"])
    assert "exported 300 passages" in capsys.readouterr().out
    common = ["search", "--topics", "scifact", "--dtype", "fp32", "--hits", "1000"]
    clsr([*common, "--backend", "milvus", "--uri", uri, "--collection", "scifact_slice",
          "--output", str(tmp_path / "milvus.trec")])
    # Lucene, exact: the default engine (Seismic, where installed) may leave out passages that share only the
    # query's weakest concepts, which a run 1000 deep over 300 passages lists.
    clsr([*common, "--index", str(slice_concept_index), "--engine", "lucene",
          "--output", str(tmp_path / "lucene.trec")])
    # read_run orders by trec_eval's rule; the slice has 300 passages, so no cut falls inside a tie.
    assert read_run(tmp_path / "milvus.trec") == read_run(tmp_path / "lucene.trec")
    with pytest.raises(SystemExit) as exit_:
        clsr(["search", "--backend", "milvus", "--uri", uri, "--collection", "nope", "--topics", "scifact",
              "--output", str(tmp_path / "x.trec")])
    assert str(exit_.value).startswith("clsr search: error: no collection 'nope' at ") and "\n" not in str(exit_.value)


@pytest.mark.parametrize("algo", ["DAAT_MAXSCORE", "DAAT_WAND"])
def test_each_sparse_index_algorithm_gives_lucenes_top_10(slice_concept_index, lucene_searcher, scifact_slice,
                                                          tmp_path, algo):
    """Milvus's dynamic-pruning algorithms are exact: the same top 10, with Lucene's scores (issue 23)."""
    from clsr.search.milvus import MilvusSearcher, export_index

    uri = str(tmp_path / "algo.db")
    export_index(slice_concept_index, uri, "algo", progress=False, inverted_index_algo=algo)
    topics = dict(list(scifact_slice.topics.items())[:30])
    expected = lucene_run(lucene_searcher, topics, k=10)
    found = MilvusSearcher(uri, "algo", **SEARCH_OPTIONS).batch_search(topics, k=10)
    assert {q: [(h.docid, h.score) for h in hits] for q, hits in found.items()} == expected


def test_an_unknown_sparse_index_algorithm_is_refused(slice_concept_index, tmp_path):
    from clsr.search.milvus import export_index

    with pytest.raises(ValueError, match="inverted_index_algo must be one of"):
        export_index(slice_concept_index, str(tmp_path / "x.db"), "x", inverted_index_algo="SCAN")


def test_an_index_with_words_exports_and_searches_as_lucene(tmp_path_factory, scifact_slice):
    """Words go into the collection beside the concepts (numbered after them): Milvus's run, document vectors and
    explanations are Lucene's."""
    import json

    pytest.importorskip("pymilvus")
    from clsr.cli import main as clsr
    from clsr.search import ClsrSearcher
    from clsr.search.milvus import MilvusSearcher, export_index

    folder = tmp_path_factory.mktemp("milvus-words")
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n"
                                                 for d in scifact_slice.documents))
    clsr(["index", "--corpus", str(folder / "corpus.jsonl"), "--index", str(folder / "index"), "--no-describe",
          "--no-tune-alpha", "--dtype", "fp32"])
    export_index(folder / "index", str(folder / "clsr.db"), "words", progress=False)
    milvus, lucene = MilvusSearcher(str(folder / "clsr.db"), "words"), ClsrSearcher(folder / "index")
    topics = dict(list(scifact_slice.topics.items())[:30])
    expected, found = lucene_run(lucene, topics, k=10), milvus.batch_search(topics, k=10)
    assert {q: [(h[0], float(h[1])) for h in hits] for q, hits in found.items()} == \
           {q: [(h[0], float(h[1])) for h in hits] for q, hits in expected.items()}
    docid = scifact_slice.doc_ids[0]
    assert milvus.doc_vector(docid) == lucene.doc_vector(docid) and any(t.startswith("w:") for t in
                                                                        milvus.doc_vector(docid))
    query = next(iter(topics.values()))
    for hit, reference in zip(milvus.search(query, 5), lucene.search(query, 5)):
        assert hit.concepts == reference.concepts and sum(c.contribution for c in hit.concepts) == hit.score
