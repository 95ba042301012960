"""Describing with a bounded cost (Step 19): past `max_passages` the evidence describer works on a seeded sample plus
every used concept's top passages, and the catalogue still describes every concept the corpus uses."""

import json

import numpy as np
import pytest

from clsr.interpret.describers import (
    EVIDENCE_POOL_SHARE,
    EVIDENCE_TOP,
    EvidenceDescriber,
    concept_top_rows,
    describe_subset,
    evidence_pool,
    subset_sample,
)

# One top passage per concept: in the doubled index below a concept's second strongest passage is the copy of its
# first, so with more than one the copies would all be top passages and the subset the whole index.
TOP = 1
ORIGINALS = 40  # SciFact passages in the doubled index, each followed by a copy
BOUND = 20  # far below the doubled index's 80 passages, so the subset leaves passages out


@pytest.fixture(scope="module")
def doubled_index(tmp_path_factory, scifact_slice):
    """A doc-K 64 concept index of 40 SciFact passages followed by a copy of each: the copy has the original's
    embedding (so the same code, and the original wins the tie for a concept's top passage) but its own text
    ("(copy) ..."), so that a copy outside the subset is seen to be never encoded. The subset is then strictly
    smaller than the index even though the used concepts' top passages cover nearly all 40 originals (as on any
    small corpus: SciFact's 6,482 used concepts' top 3 cover 92% of it)."""
    from clsr.index import build_concept_index
    from clsr.sae.model import TopKSae, default_sae_path

    work = tmp_path_factory.mktemp("doubled")
    originals = scifact_slice.documents[:ORIGINALS]
    documents = [(d.id, d.text) for d in originals] + [(f"copy-{d.id}", f"(copy) {d.text}") for d in originals]
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in documents))
    vectors = np.concatenate([scifact_slice.doc_vectors[:ORIGINALS]] * 2)
    build_concept_index([i for i, _ in documents], vectors, work / "index",
                        sae=TopKSae.load_from_disk(default_sae_path()), sae_path=default_sae_path(),
                        encoder=scifact_slice.encoder.config.to_dict(), encoding=scifact_slice.encoder.encoding,
                        doc_k=64, source=str(corpus), progress=False)
    return work / "index"


@pytest.fixture(scope="module")
def full_catalogue(doubled_index):
    """The catalogue without a bound: every passage described, as before the bound existed."""
    from clsr.interpret.describe import build_catalogue

    return build_catalogue(doubled_index, describer="evidence", top_passages=TOP, progress=False, max_passages=None)


def codes_of(index_dir):
    from clsr.index import DocCodes

    return DocCodes(index_dir)


def test_the_subset_is_seeded_bounded_and_holds_every_used_concepts_top_passages(doubled_index):
    codes = codes_of(doubled_index)
    n = len(codes.ids)
    assert describe_subset(codes.latents, codes.activations, TOP, n) is None  # at the bound: the whole index
    assert describe_subset(codes.latents, codes.activations, TOP, None) is None  # no bound
    rows = describe_subset(codes.latents, codes.activations, TOP, BOUND)
    assert np.array_equal(rows, describe_subset(codes.latents, codes.activations, TOP, BOUND))  # seeded
    top_known = concept_top_rows(codes.latents, codes.activations, TOP)  # as build_catalogue passes them
    assert np.array_equal(rows, describe_subset(codes.latents, codes.activations, TOP, BOUND, top_rows=top_known))
    assert not np.array_equal(rows, describe_subset(codes.latents, codes.activations, TOP, BOUND, seed=1))
    top = concept_top_rows(codes.latents, codes.activations, TOP)
    assert np.all(np.diff(rows) > 0) and set(top.tolist()) <= set(rows.tolist())
    assert BOUND <= len(rows) <= BOUND + len(top) and len(rows) < n
    # Each concept's top passages, as the catalogue orders them (strongest first, ties to the earlier passage).
    latents, activations = np.asarray(codes.latents, np.int64), np.asarray(codes.activations, np.float32)
    for latent in np.unique(latents[activations > 0])[::25].tolist():
        column = np.where(latents == latent, activations, 0).max(1)
        firing = np.flatnonzero(column > 0)
        assert set(firing[np.argsort(-column[firing], kind="stable")[:TOP]].tolist()) <= set(top.tolist())
    # Only the concepts asked for, when given; chunked reading finds the same rows.
    assert set(concept_top_rows(latents, activations, TOP, concepts=[int(latents[0, 0])]).tolist()) <= set(top)
    assert np.array_equal(concept_top_rows(latents, activations, TOP, chunk_rows=7), top)
    with pytest.raises(ValueError, match="at least 1"):
        describe_subset(codes.latents, codes.activations, TOP, 0)


@pytest.mark.slow
def test_at_or_above_the_index_size_the_catalogue_is_the_full_pass(doubled_index, full_catalogue):
    from clsr.interpret.describe import build_catalogue

    bounded = build_catalogue(doubled_index, describer="evidence", top_passages=TOP, progress=False,
                              max_passages=len(codes_of(doubled_index).ids))
    assert bounded == full_catalogue


@pytest.mark.slow
def test_past_the_bound_every_used_concept_is_described_from_the_subset_alone(doubled_index, full_catalogue,
                                                                               monkeypatch):
    import clsr.encode.dense
    from clsr.encode.dense import DenseEncoder
    from clsr.interpret.describe import build_catalogue
    from clsr.interpret.evidence import EvidenceExplainer

    evidence_texts, encoded_texts = [], []
    batched, encode_documents = EvidenceExplainer.batched_contributions, DenseEncoder.encode_documents

    def recording_batched(self, texts, latent_lists, consume, batch_size=16):
        evidence_texts.extend(texts)
        return batched(self, texts, latent_lists, consume, batch_size=batch_size)

    def recording_encode(self, documents, **kwargs):
        encoded_texts.extend(documents)
        return encode_documents(self, documents, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole corpus was encoded or read from the embedding cache past the bound")

    monkeypatch.setattr(EvidenceExplainer, "batched_contributions", recording_batched)
    monkeypatch.setattr(DenseEncoder, "encode_documents", recording_encode)
    monkeypatch.setattr(clsr.encode.dense, "encode_corpus", refuse)
    bounded = build_catalogue(doubled_index, describer="evidence", top_passages=TOP, progress=False,
                              max_passages=BOUND)

    codes = codes_of(doubled_index)
    rows = describe_subset(codes.latents, codes.activations, TOP, BOUND)
    subset = {codes.ids[row] for row in rows.tolist()}
    rows_of_corpus = [json.loads(line) for line in (doubled_index.parent / "corpus.jsonl").read_text().splitlines()]
    texts = {row["_id"]: row["text"] for row in rows_of_corpus}
    inside = {texts[docid] for docid in subset}
    outside = {texts[docid] for docid in texts if docid not in subset}
    assert outside and not outside & inside  # the index has passages the subset leaves out
    # The encoder saw the subset's passages and nothing else: their embeddings once, then evidence for some of them.
    assert sorted(encoded_texts) == sorted(inside)
    assert evidence_texts and set(evidence_texts) <= inside and not set(evidence_texts) & outside
    # Word evidence came from the fixed pool and each used concept's EVIDENCE_TOP strongest passages alone.
    used_count = len({e.concept for e in full_catalogue if e.df})
    assert len(set(evidence_texts)) <= EVIDENCE_TOP * used_count + max(1, BOUND // EVIDENCE_POOL_SHARE)
    # Every concept the corpus uses is still described, with a label; the statistics are the whole index's.
    used = {e.concept for e in full_catalogue if e.df}
    assert {e.concept for e in bounded if e.description} == used
    assert all(e.label is not None and e.description for e in bounded if e.df)
    statistics = ("concept", "df", "rank", "region", "mean_activation", "max_activation", "top_passages",
                  "described_with")
    assert [[getattr(e, f) for f in statistics] for e in bounded] == [[getattr(e, f) for f in statistics]
                                                                      for e in full_catalogue]
    n = len(codes.ids)
    for entry in bounded:
        if entry.df:
            assert {p["docid"] for p in entry.top_passages} <= subset  # read from the subset, shown as before
            assert entry.label["df_share"] == pytest.approx(entry.df / n, abs=1e-4)  # the index's share


def test_given_embeddings_only_the_subsets_rows_are_read(doubled_index, scifact_slice):
    from clsr.interpret.describe import KeywordDescriber
    from clsr.interpret.describers import evidence_describer_for, unit_rows
    from clsr.interpret.evidence import passage_texts

    vectors = np.concatenate([scifact_slice.doc_vectors[:ORIGINALS]] * 2)

    class Rows:
        """An embeddings matrix that records which rows are read and refuses to be read whole."""

        def __init__(self):
            self.asked = []

        def __len__(self):
            return len(vectors)

        def __getitem__(self, rows):
            self.asked.append(np.asarray(rows))
            return vectors[rows]

        def __array__(self, *args, **kwargs):
            raise AssertionError("the whole embeddings matrix was read")

    given = Rows()
    texts = passage_texts(doubled_index)
    describer = evidence_describer_for(doubled_index, texts, KeywordDescriber(()).stem, top_passages=TOP,
                                       embeddings=given, max_passages=BOUND, dtype="fp32")
    codes = codes_of(doubled_index)
    rows = describe_subset(codes.latents, codes.activations, TOP, BOUND)
    assert len(given.asked) == 1 and np.array_equal(given.asked[0], rows)
    assert np.array_equal(describer.corpus_rows, rows) and len(describer.texts) == len(rows)
    np.testing.assert_array_equal(describer.embeddings, unit_rows(vectors[rows]))
    np.testing.assert_array_equal(describer.latents, np.asarray(codes.latents, np.int64)[rows])
    with pytest.raises(ValueError, match="embeddings for an index of"):
        evidence_describer_for(doubled_index, texts, KeywordDescriber(()).stem, top_passages=TOP,
                               embeddings=vectors[:10], max_passages=BOUND, dtype="fp32")


def test_past_the_bound_word_evidence_comes_from_the_pool_and_each_concepts_strongest_passages():
    """The pools an evidence pass reads: with an evidence pool, only its rows and every described concept's
    EVIDENCE_TOP strongest passages (a concept's own first); without, the concept's whole firing list."""
    rng = np.random.default_rng(3)
    n, k, width = 400, 4, 60
    latents = np.stack([rng.choice(width, size=k, replace=False) for _ in range(n)])
    activations = rng.random((n, k)).astype(np.float32) + 0.01
    sample = subset_sample(n, 100, seed=0)
    assert len(set(sample.tolist())) == 100 and np.array_equal(sample, subset_sample(n, 100, seed=0))
    pool = evidence_pool(n, np.arange(n), 100, seed=0)  # the subset is every row here
    assert np.array_equal(pool, np.sort(sample[:100 // EVIDENCE_POOL_SHARE]))

    def pools(evidence):
        describer = EvidenceDescriber(None, [""] * n, latents, activations, lambda w: w, evidence_pool=evidence)
        return describer, describer.pools(range(width))

    describer, (top, sampled) = pools(pool)
    allowed = set(pool.tolist()) | {r for latent in range(width) for r in describer.firing(latent)[0][:EVIDENCE_TOP]}
    used = set()
    for latent in range(width):
        firing = describer.firing(latent)[0]
        chosen = set(top[latent].tolist()) | set(sampled[latent].tolist())
        assert chosen <= allowed and chosen <= set(firing.tolist())
        assert top[latent][:EVIDENCE_TOP].tolist() == firing[:EVIDENCE_TOP].tolist()  # its own strongest first
        assert len(top[latent]) == min(describer.top_passages, len([r for r in firing if r in allowed]))
        used |= chosen
    assert len(used) <= EVIDENCE_TOP * width + len(pool) < n
    _, (whole_top, whole_sampled) = pools(None)  # below the bound: every firing passage may give evidence
    assert len(set().union(*(set(r.tolist()) for r in [*whole_top.values(), *whole_sampled.values()]))) > len(used)
    with pytest.raises(ValueError, match="do not hold the sample"):
        evidence_pool(n, np.arange(10), 100, seed=0)


def test_the_catalogues_statistics_and_top_passages_read_in_chunks_are_the_whole_codes():
    """df, activation sums and maxima, and each concept's top passages, read a few rows at a time (as a memory map
    of millions of passages is) are what one pass over the whole codes gives."""
    from clsr.interpret.describe import code_statistics
    from clsr.interpret.describers import concept_top_postings

    rng = np.random.default_rng(5)
    n, k, width = 300, 6, 40
    latents = np.stack([rng.choice(width, size=k, replace=False) for _ in range(n)]).astype(np.uint16)
    activations = rng.choice([0.0, 0.25, 0.5, 1.0, 1.5], size=(n, k)).astype(np.float16)  # ties and zeros
    fired = activations > 0
    df, sums, maxima = code_statistics(latents, activations, width, chunk_rows=7)
    assert np.array_equal(df, np.bincount(latents[fired].astype(np.int64), minlength=width))
    np.testing.assert_allclose(sums, np.bincount(latents[fired].astype(np.int64), weights=activations[fired],
                                                 minlength=width), rtol=1e-12)
    assert np.array_equal(maxima, [activations[fired & (latents == c)].max(initial=0) for c in range(width)])
    whole = concept_top_postings(latents, activations, 3, chunk_rows=n)
    for name, chunked in zip(whole._fields, concept_top_postings(latents, activations, 3, chunk_rows=7)):
        assert np.array_equal(chunked, getattr(whole, name))
    for c in range(width):  # strongest first, ties to the earlier passage
        column = np.where(fired & (latents == c), activations, 0).max(1).astype(np.float32)
        firing = np.flatnonzero(column > 0)
        expected = firing[np.lexsort((firing, -column[firing]))][:3]
        assert whole.rows[whole.latents == c].tolist() == expected.tolist()
