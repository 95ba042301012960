"""The Lucene concept index: exact integer scores, the Pyserini drop-in, and safe builds."""

import json

import numpy as np
import pytest

from clsr.cli import main as clsr
from clsr.evaluate import read_run, trec_eval_order
from clsr.index import MANIFEST_NAME, DocCodes, InvalidIndexError, build_concept_index, read_manifest
from clsr.index.concepts import concept_term, dot
from clsr.index.manifest import QueryDefaults
from clsr.sae.config import SaeConfig
from clsr.sae.model import SaeMismatchError, TopKSae, default_sae_path

# Results that depend on encoder numerics: run again under CLSR_DTYPE=bf16 by `make test-bf16`.
pytestmark = pytest.mark.numerics

SEARCH_OPTIONS = {"dtype": "fp32"}  # the slice's documents were encoded in fp32


@pytest.fixture(scope="module")
def sae() -> TopKSae:
    return TopKSae.load_from_disk(default_sae_path())


@pytest.fixture(scope="module")
def concept_index(tmp_path_factory, scifact_slice, sae):
    index_dir = tmp_path_factory.mktemp("concepts") / "index"
    build_concept_index(scifact_slice.doc_ids, scifact_slice.doc_vectors, index_dir, sae=sae,
                        sae_path=default_sae_path(), encoder=scifact_slice.encoder.config.to_dict(), doc_k=64,
                        source="scifact slice", progress=False)
    return index_dir


@pytest.fixture(scope="module")
def searcher(concept_index):
    from clsr.search import ClsrSearcher

    return ClsrSearcher(concept_index, **SEARCH_OPTIONS)


@pytest.fixture(scope="module")
def topics_file(tmp_path_factory, scifact_slice):
    path = tmp_path_factory.mktemp("topics") / "queries.jsonl"
    first = dict(list(scifact_slice.topics.items())[:40])
    path.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in first.items()))
    return path, first


def test_manifest_records_what_the_index_depends_on(concept_index, scifact_slice):
    manifest = read_manifest(concept_index)
    assert manifest.kind == "concepts" and manifest.documents == 300 and manifest.doc_k == 64
    assert manifest.encoder == scifact_slice.encoder.config.to_dict()
    assert manifest.sae.name == "minilm-l6-v2-general-topk128-8192" and len(manifest.sae.sha256) == 64
    assert manifest.doc_quantizer["bits"] == 8 and manifest.doc_quantizer["scale"] > 0
    assert manifest.query == QueryDefaults(k=128, mode="topk", quantizer=manifest.query.quantizer)
    assert manifest.query.quantizer["scale"] is None  # per query
    # Every document has exactly 64 positive concepts, so 64 postings each.
    assert manifest.postings == 300 * 64 and manifest.empty_documents == 0


def test_doc_codes_hold_the_same_impacts_as_lucene(concept_index, searcher):
    from clsr.jvm import pyserini_lucene

    pyserini_lucene()
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(concept_index))
    codes = DocCodes(concept_index)
    quantizer = searcher.concept_encoder.doc_quantizer
    for docid in codes.ids[:5]:
        activations, latents = codes.code(docid)
        for latent, impact in zip(latents[:8], quantizer.quantize(activations[:8])):
            postings = reader.get_postings_list(concept_term(int(latent)), analyzer=None)
            tf = {reader.convert_internal_docid_to_collection_docid(p.docid): p.tf for p in postings}
            assert tf[docid] == impact
    # Only what cannot be derived is stored: uint16 latent ids and float16 activations, no decoded embeddings.
    assert codes.latents.dtype == np.uint16 and codes.activations.dtype == np.float16
    assert codes.stored_reconstructions is None and not (concept_index / "doc_codes" / "reconstructed.npy").exists()


def test_dense_scores_from_codes_equal_those_of_the_decoded_embeddings(concept_index, searcher, scifact_slice):
    """The hybrid scores q . d_hat as sum_k a_k (W_dec q)[l_k] + b_dec . q, without decoding d_hat."""
    codes, sae = DocCodes(concept_index), searcher.concept_encoder.sae
    docids = codes.ids[:100]
    decoded = searcher.reconstructions(docids)
    rows = [codes.row(d) for d in docids]
    np.testing.assert_array_equal(decoded, sae.decode_numpy(np.asarray(codes.activations[rows], np.float32),
                                                            np.asarray(codes.latents[rows], np.int64)))
    for query in scifact_slice.query_vectors[:10]:
        fast = searcher.reconstruction_scores(docids, query)
        # Two float32 summation orders of the same K + d products (each term |a_k w_k q| <= a_k: unit-norm decoder
        # rows and query): they differ by at most (K + d) * eps32 * (sum_k a_k + |b_dec . q|) each.
        activations = np.asarray(codes.activations[rows], np.float64)
        offset = abs(sae.b_dec.detach().numpy() @ query)
        bound = (64 + 384) * np.finfo(np.float32).eps * (activations.sum(axis=1) + offset)
        assert np.all(np.abs(fast - decoded @ query) <= bound)


def test_lucene_scores_are_the_integer_dot_products(searcher, scifact_slice):
    for query in list(scifact_slice.topics.values())[:10]:
        vector = searcher.query_encoder.encode(query)
        assert all(isinstance(w, int) and 1 <= w <= 255 for w in vector.values()) and max(vector.values()) == 255
        hits = searcher.search(query, 20)
        assert len(hits) == 20
        for hit in hits:
            activations, latents = searcher.doc_codes.code(hit.docid)
            impacts = searcher.concept_encoder.doc_quantizer.quantize(activations)
            doc_vector = {concept_term(int(l)): int(i) for l, i in zip(latents, impacts) if i}
            assert hit.score == dot(vector, doc_vector) == sum(c.contribution for c in hit.concepts)
            assert [c.contribution for c in hit.concepts] == sorted((c.contribution for c in hit.concepts),
                                                                     reverse=True)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_pyserini_impact_searcher_takes_the_clsr_query_encoder(concept_index, searcher, scifact_slice):
    from clsr.jvm import pyserini_lucene
    from clsr.search.pyserini import ClsrDocumentEncoder, ClsrQueryEncoder

    pyserini = pyserini_lucene().LuceneImpactSearcher(str(concept_index), ClsrQueryEncoder(concept_index,
                                                                                            **SEARCH_OPTIONS))
    query = list(scifact_slice.topics.values())[3]
    assert [(h.docid, h.score) for h in pyserini.search(query, 10)] == \
        [(h.docid, h.score) for h in searcher.search(query, 10)]
    # The document encoder gives each passage the vector the index holds.
    document = scifact_slice.documents[0]
    (vector,) = ClsrDocumentEncoder(concept_index, **SEARCH_OPTIONS).encode([document.text])
    activations, latents = searcher.doc_codes.code(document.id)
    impacts = searcher.concept_encoder.doc_quantizer.quantize(activations)
    assert vector == {concept_term(int(l)): int(i) for l, i in zip(latents, impacts) if i}


def test_clsr_search_python_api_and_stock_pyserini_give_identical_runs(concept_index, searcher, topics_file,
                                                                       tmp_path, stock_pyserini_search):
    path, topics = topics_file
    clsr(["search", "--index", str(concept_index), "--topics", str(path), "--output", str(tmp_path / "clsr.trec"),
          "--hits", "100", "--dtype", "fp32"])
    clsr(["encode-queries", "--index", str(concept_index), "--topics", str(path), "--dtype", "fp32",
          "--output", str(tmp_path / "queries.jsonl"), "--topics-output", str(tmp_path / "topics.json")])
    stock_pyserini_search(concept_index, tmp_path / "topics.json", tmp_path / "queries.jsonl", tmp_path / "stock.trec",
                          hits=100)

    def lines(path):  # qid, docid, score: Pyserini writes exact ties in Lucene's order, clsr in trec_eval's
        return sorted((f[0], f[2], float(f[4])) for f in map(str.split, open(path)))  # 123.0 and 123.000000 alike

    api = searcher.batch_search(topics, k=100)
    api_lines = sorted((qid, docid, score) for qid, hits in api.items() for docid, score in hits)
    assert len(api_lines) == 40 * 100
    assert lines(tmp_path / "clsr.trec") == api_lines == lines(tmp_path / "stock.trec")
    # clsr's rank column is trec_eval's order of the scores, so evaluation reads the ranks as written.
    for hits in read_run(tmp_path / "clsr.trec").values():
        assert hits == trec_eval_order(hits)


def test_a_different_sae_or_encoder_is_refused_unless_forced(concept_index, tmp_path, capsys):
    from clsr.encode.dense import encoder_config
    from clsr.search import load_concept_encoder

    other = TopKSae(SaeConfig(384, 512, 128, encoder=encoder_config("minilm").to_dict()))
    other.save_to_disk(tmp_path / "other-sae")
    with pytest.raises(SaeMismatchError, match=r"(?s)index .*minilm-l6-v2-general-topk128-8192.*given .*other-sae"):
        load_concept_encoder(concept_index, sae_path=tmp_path / "other-sae")
    assert load_concept_encoder(concept_index, sae_path=tmp_path / "other-sae", force=True).sae.config.n_latents == 512
    with pytest.raises(InvalidIndexError, match=r"(?s)index .*pooling='mean'.*query encoder: .*pooling='cls'"):
        load_concept_encoder(concept_index, encoder=encoder_config("minilm", pooling="cls"))
    with pytest.raises(SystemExit, match="clsr search: error: the SAE does not match the index"):
        clsr(["search", "--index", str(concept_index), "--topics", "scifact", "--output", str(tmp_path / "r.trec"),
              "--sae", str(tmp_path / "other-sae")])


def test_rebuild_needs_overwrite_and_a_failed_rebuild_keeps_the_old_index(concept_index, scifact_slice, sae,
                                                                         tmp_path, monkeypatch):
    import clsr.index.lucene

    arguments = dict(sae=sae, sae_path=default_sae_path(), encoder=scifact_slice.encoder.config.to_dict(),
                     progress=False)
    target = tmp_path / "index"
    build_concept_index(scifact_slice.doc_ids[:50], scifact_slice.doc_vectors[:50], target, doc_k=32, **arguments)
    with pytest.raises(InvalidIndexError, match="already exists; pass --overwrite"):
        build_concept_index(scifact_slice.doc_ids, scifact_slice.doc_vectors, target, **arguments)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(clsr.index.lucene, "run_anserini_indexer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_concept_index(scifact_slice.doc_ids, scifact_slice.doc_vectors, target, overwrite=True, **arguments)
    with pytest.raises(KeyboardInterrupt):
        build_concept_index(scifact_slice.doc_ids, scifact_slice.doc_vectors, tmp_path / "new", **arguments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no half-built index, no leftovers
    assert read_manifest(target).documents == 50 and read_manifest(target).doc_k == 32


def test_bad_inputs_name_the_problem(scifact_slice, sae, tmp_path):
    arguments = dict(sae=sae, sae_path=default_sae_path(), encoder=scifact_slice.encoder.config.to_dict(),
                     progress=False)
    with pytest.raises(InvalidIndexError, match="beyond 2\\*\\*24"):
        build_concept_index(scifact_slice.doc_ids, scifact_slice.doc_vectors, tmp_path / "i", bits=12, **arguments)
    with pytest.raises(SaeMismatchError, match="384-d vectors .* are 10-d"):
        build_concept_index(["a"], np.ones((1, 10), np.float32), tmp_path / "i", **arguments)
    with pytest.raises(InvalidIndexError, match="not unique"):
        build_concept_index(["a", "a"], scifact_slice.doc_vectors[:2], tmp_path / "i", **arguments)
    assert not (tmp_path / "i").exists()
    assert not (tmp_path / "i" / MANIFEST_NAME).exists()


def test_hybrid_search_is_the_fusion_of_its_component_runs(concept_index, searcher, topics_file, tmp_path):
    from clsr.evaluate import read_run
    from clsr.fusion import interpolate
    from clsr.search.pyserini import cache_key

    path, topics = topics_file
    clsr(["search", "--index", str(concept_index), "--topics", str(path), "--output", str(tmp_path / "hybrid.trec"),
          "--hybrid", "--alpha", "0.3", "--depth", "100", "--hits", "50", "--dtype", "fp32"])
    # By hand: the sparse top 100, rescored by the original query embedding against the decoded documents
    # (scored from their codes, as the test above checks against the decoded embeddings themselves).
    sparse = searcher.batch_search(topics, k=100)
    embeddings = searcher.concept_encoder.dense.encode_queries([cache_key(t) for t in topics.values()])
    dense = {qid: list(zip([d for d, _ in sparse[qid]],
                           map(float, searcher.reconstruction_scores([d for d, _ in sparse[qid]], vector))))
             for qid, vector in zip(topics, embeddings)}
    expected = interpolate(sparse, {q: sorted(h, key=lambda x: -x[1]) for q, h in dense.items()}, 0.3, k=50)
    written = read_run(tmp_path / "hybrid.trec")
    assert sum(map(len, written.values())) == 40 * 50
    for qid in topics:
        assert [d for d, _ in written[qid]] == [d for d, _ in expected[qid]]
        assert [s for _, s in written[qid]] == pytest.approx([s for _, s in expected[qid]], abs=1e-6)  # 6 decimals
    # The fusion moved documents: it is not the sparse ranking.
    assert any([d for d, _ in written[q]] != [d for d, _ in sparse[q][:50]] for q in topics)


def test_tune_alpha_refuses_test_splits(concept_index):
    for split in ("test", "dev.small", "dl19"):
        with pytest.raises(SystemExit, match=f"refusing to tune on the '{split}' split"):
            clsr(["tune-alpha", "--index", str(concept_index), "--topics", "scifact", "--split", split])


def test_pseudo_query_tuning_reads_no_judgments(concept_index, scifact_slice, tmp_path, monkeypatch, capsys):
    import clsr.data as data_module
    from clsr.fusion import pseudo_queries

    def no_judgments(*args, **kwargs):
        raise AssertionError("self-supervised tuning read qrels")

    for name in ("load_qrels", "_read_qrels_file", "load_topics"):
        monkeypatch.setattr(data_module, name, no_judgments)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in scifact_slice.documents))
    clsr(["tune-alpha", "--index", str(concept_index), "--pseudo-queries", "30", "--corpus", str(corpus),
          "--dtype", "fp32", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["tuned_on"] == f"30 pseudo-queries from {corpus}"
    assert list(result["curve"]) == [str(i / 10) for i in range(11)]
    assert result["best_alpha"] == float(max(result["curve"].items(),
                                             key=lambda kv: (kv[1], -abs(float(kv[0]) - .5)))[0])
    # Each pseudo-query is a sentence or span of its one relevant passage.
    topics, qrels = pseudo_queries(scifact_slice.documents, 30)
    text_of = {d.id: d.text for d in scifact_slice.documents}
    assert len(topics) == 30 and all(topics[q] in text_of[next(iter(qrels[q]))] for q in topics)
    assert all(6 <= len(t.split()) <= 16 for t in topics.values())


def test_boosting_a_concept_raises_its_documents_and_suppressing_removes_it(concept_index, scifact_slice):
    from clsr.search import ClsrSearcher

    query = list(scifact_slice.topics.values())[0]
    plain = ClsrSearcher(concept_index, **SEARCH_OPTIONS)
    hits = plain.search(query, 300)
    # A document far down the ranking, and its strongest concept that the query lacks.
    target = hits[150].docid
    activations, latents = plain.doc_codes.code(target)
    query_terms = set(plain.query_encoder.encode(query))
    boosted = next(int(l) for l in latents if concept_term(int(l)) not in query_terms)
    steered = ClsrSearcher(concept_index, steering={boosted: 8.0}, **SEARCH_OPTIONS)
    rank = {h.docid: r for r, h in enumerate(steered.search(query, 300))}
    assert concept_term(boosted) in steered.query_encoder.encode(query)
    assert rank[target] < 150
    carriers = {d for d in plain.doc_codes.ids if boosted in plain.doc_codes.code(d)[1].tolist()}
    top_before = sum(h.docid in carriers for h in hits[:20])
    top_after = sum(h.docid in carriers for h in steered.search(query, 20))
    assert top_after > top_before

    strongest = hits[0].concepts[0].concept
    suppressed = ClsrSearcher(concept_index, steering={int(strongest[1:]): 0.0}, **SEARCH_OPTIONS)
    assert strongest not in suppressed.query_encoder.encode(query)
    assert all(strongest not in {c.concept for c in h.concepts} for h in suppressed.search(query, 20))
    for hit in suppressed.search(query, 20):
        assert hit.score == sum(c.contribution for c in hit.concepts)


def test_explain_contributions_sum_to_the_lucene_score(concept_index, searcher, scifact_slice, capsys):
    from clsr.interpret.explain import explain

    query = list(scifact_slice.topics.values())[5]
    hits = searcher.search(query, 5)
    for rank, hit in enumerate(hits, 1):
        explanation = explain(searcher, query, hit.docid)
        assert explanation["rank"] == rank and explanation["score"] == hit.score
        assert sum(c["contribution"] for c in explanation["shared"]) == explanation["score"]
        assert explanation["query_concepts"][0]["weight"] == 255
    clsr(["explain", "--index", str(concept_index), "--query", query, "--docid", hits[0].docid, "--json",
          "--dtype", "fp32"])
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"score", "shared", "query_concepts", "doc_concepts"}
    assert printed["score"] == hits[0].score
    assert set(printed["shared"][0]) == {"concept", "kind", "query_weight", "doc_weight", "contribution",
                                         "description"}


def test_search_explain_writes_each_hit_with_its_top_shared_concepts(concept_index, searcher, topics_file, tmp_path):
    path, topics = topics_file
    clsr(["search", "--index", str(concept_index), "--topics", str(path), "--output", str(tmp_path / "hits.jsonl"),
          "--hits", "5", "--explain", "--dtype", "fp32"])
    lines = [json.loads(line) for line in open(tmp_path / "hits.jsonl")]
    assert len(lines) == 40 * 5
    first = lines[0]
    expected = searcher.search(topics[first["qid"]], 1)[0]
    assert (first["docid"], first["rank"], first["score"]) == (expected.docid, 1, expected.score)
    assert [c["concept"] for c in first["concepts"]] == [c.concept for c in expected.concepts[:3]]


def test_document_side_amplification_rescores_by_the_edited_document_weights(searcher, scifact_slice):
    query = list(scifact_slice.topics.values())[2]
    vector = searcher.query_encoder.encode(query)
    hits = searcher.search(query, 30)
    concept = hits[0].concepts[0].concept
    rescored = dict(searcher.rescore_with_doc_steering(vector, [(h.docid, h.score) for h in hits],
                                                       {int(concept[1:]): 3.0}))
    for hit in hits:
        boosted = sum(c.contribution for c in hit.concepts if c.concept == concept)
        assert rescored[hit.docid] == hit.score + 2 * boosted


def test_boost_concept_by_description_picks_and_names_the_concepts(concept_index, topics_file, tmp_path, capsys):
    from clsr.interpret.describe import CATALOGUE_NAME, build_catalogue, load_catalogue, pick_concepts, write_catalogue

    catalogue_path = tmp_path / CATALOGUE_NAME
    write_catalogue(build_catalogue(concept_index, corpus="scifact", top_passages=5, progress=False), catalogue_path)
    catalogue = load_catalogue(catalogue_path)
    described = next(e for e in sorted(catalogue.values(), key=lambda e: e.rank) if e.region == "torso")
    words = described.description.split(", ")[:2]
    picked = pick_concepts(catalogue, " ".join(words))
    assert picked[0][1] == 2 and described.concept in {term for term, _ in picked}
    path, _ = topics_file
    clsr(["search", "--index", str(concept_index), "--topics", str(path), "--output", str(tmp_path / "run.trec"),
          "--hits", "10", "--dtype", "fp32", "--catalogue", str(catalogue_path),
          "--boost-concept", f"{', '.join(words)}=3"])
    err = capsys.readouterr().err
    assert f"--boost-concept '{', '.join(words)}': boosting " in err and picked[0][0] in err


def test_hybrid_steering_moves_the_dense_query_through_the_decoder(concept_index, scifact_slice):
    from clsr.fusion import HybridSearcher

    query = list(scifact_slice.topics.values())[4]
    plain = HybridSearcher(concept_index, **SEARCH_OPTIONS)
    embedding = plain.sparse.concept_encoder.dense.encode_queries([query])
    code = plain.sparse.concept_encoder.query_codes(embedding)
    latent = int(code[1][0][0])  # the query's strongest concept
    steered = HybridSearcher(concept_index, steering={latent: 3.0}, **SEARCH_OPTIONS)
    moved = steered.query_vectors(embedding) - plain.query_vectors(embedding)
    atom = plain.sparse.concept_encoder.sae.W_dec.detach().numpy()[latent]
    # Tripling the concept adds 2 x its activation along its decoder direction, and nothing else.
    np.testing.assert_allclose(moved[0], 2 * code[0][0][0] * atom, atol=1e-5)


def test_explain_names_an_unknown_document(concept_index):
    with pytest.raises(SystemExit, match="clsr explain: error: document 'nope' is not in this index"):
        clsr(["explain", "--index", str(concept_index), "--query", "cells", "--docid", "nope"])


def test_an_index_with_clsr_0_1_doc_codes_reads_and_scores_against_its_stored_embeddings(slice_concept_index,
                                                                                          tmp_path, scifact_slice):
    """clsr 0.1 stored float32 activations and every decoded embedding (reconstructed.npy); both still serve."""
    import shutil

    from clsr.search import ClsrSearcher

    index = tmp_path / "old"
    shutil.copytree(slice_concept_index, index, ignore=shutil.ignore_patterns("engines"))
    store = index / "doc_codes"
    fresh = ClsrSearcher(slice_concept_index, **SEARCH_OPTIONS)
    decoded = fresh.reconstructions(fresh.doc_codes.ids)
    np.save(store / "activations.npy", np.asarray(fresh.doc_codes.activations, np.float32))
    np.save(store / "reconstructed.npy", decoded + 1.0)  # stored embeddings, told apart from decoded ones
    old = ClsrSearcher(index, **SEARCH_OPTIONS)
    query = scifact_slice.query_vectors[0]
    docids = old.doc_codes.ids[:50]
    np.testing.assert_array_equal(old.reconstruction_scores(docids, query), (decoded[:50] + 1.0) @ query)
    hit = old.search(next(iter(scifact_slice.topics.values())), k=1)[0]
    assert sum(c.contribution for c in hit.concepts) == hit.score
