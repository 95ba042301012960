import numpy as np
import pytest

from clsr.data import load_corpus
from clsr.encode.dense import BGE_QUERY_INSTRUCTION, DenseEncoder, bundled_minilm_dir, encode_corpus, encoder_config
from clsr.evaluate import evaluate
from clsr.index import build_dense_index
from clsr.search import DenseSearcher, InvalidIndexError

# Results that depend on encoder numerics: run again under CLSR_DTYPE=bf16 by `make test-bf16`.
pytestmark = pytest.mark.numerics

TEXTS = ["Vitamin D deficiency is linked to bone loss.", "A cat sat on the mat.", ""]


@pytest.fixture(scope="module")
def minilm_fp32():
    return DenseEncoder(encoder_config("minilm"), dtype="fp32")


def test_minilm_matches_sentence_transformers(minilm_fp32):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(bundled_minilm_dir(), device="cpu").encode(TEXTS, normalize_embeddings=True)
    ours = minilm_fp32.encode(TEXTS)
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_bf16_stays_close_to_fp32(minilm_fp32):
    bf16 = DenseEncoder(encoder_config("minilm"), dtype="bf16").encode(TEXTS)
    cosines = (bf16 * minilm_fp32.encode(TEXTS)).sum(1)
    assert cosines.min() > 0.99


def test_length_sorted_batching_keeps_input_order(minilm_fp32):
    texts = ["short", "a much longer text than the others, with many more tokens in it", "mid length text"]
    one_by_one = np.stack([minilm_fp32.encode([t])[0] for t in texts])
    np.testing.assert_allclose(DenseEncoder(minilm_fp32.config, dtype="fp32", batch_size=2).encode(texts),
                               one_by_one, atol=1e-5)


def test_settings_change_the_vectors(minilm_fp32):
    cls = DenseEncoder(encoder_config("minilm", pooling="cls"), dtype="fp32").encode(TEXTS[:1])
    raw = DenseEncoder(encoder_config("minilm", normalize=False), dtype="fp32").encode(TEXTS[:1])
    assert not np.allclose(cls, minilm_fp32.encode(TEXTS[:1]), atol=1e-3)
    assert abs(np.linalg.norm(raw) - 1) > 0.01
    prefixed = DenseEncoder(encoder_config("minilm", query_prefix="query: "), dtype="fp32")
    np.testing.assert_allclose(prefixed.encode_queries(["x"]), minilm_fp32.encode(["query: x"]), atol=1e-6)


def test_bge_preset_is_cls_pooling_with_the_query_instruction():
    bge = encoder_config("bge")
    assert (bge.pooling, bge.query_prefix, bge.max_length) == ("cls", BGE_QUERY_INSTRUCTION, 512)


def test_corpus_embeddings_are_cached(minilm_fp32, tmp_path):
    docs = load_corpus("scifact")[:20]
    first = encode_corpus(minilm_fp32, docs, cache_dir=tmp_path, progress=False)

    def no_encoding(*args, **kwargs):
        raise AssertionError("re-encoded a cached corpus")

    cached_encoder = DenseEncoder(minilm_fp32.config, dtype="fp32")
    cached_encoder.encode = no_encoding
    second = encode_corpus(cached_encoder, docs, cache_dir=tmp_path, progress=False)
    assert second.ids == first.ids == [d.id for d in docs]
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    with pytest.raises(AssertionError, match="re-encoded"):  # another corpus is another key
        encode_corpus(cached_encoder, docs[:19], cache_dir=tmp_path, progress=False)


@pytest.mark.slow
def test_dense_retrieval_on_a_scifact_slice(scifact_slice, tmp_path):
    """Exact search over 300 passages: the judged ones for 150 test queries plus others."""
    s = scifact_slice
    encoded = encode_corpus(s.encoder, s.documents, progress=False)
    np.testing.assert_array_equal(encoded.embeddings, s.doc_vectors)
    build_dense_index(encoded.ids, encoded.embeddings, tmp_path / "dense", encoder=s.encoder.config.to_dict())
    searcher = DenseSearcher(tmp_path / "dense", encoder=s.encoder)
    run = searcher.batch_search(s.topics, k=10)

    brute_force = np.argsort(-(s.query_vectors @ s.doc_vectors.T), axis=1)[:, :10]
    assert [[h.docid for h in run[q]] for q in s.topics] == [[s.doc_ids[i] for i in row] for row in brute_force]
    # Measured once on this slice (fp32); a broken pooling or prefix moves it by far more than 0.005.
    assert evaluate(run, s.qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(0.8837, abs=0.005)


def test_searching_with_another_encoder_than_the_index_is_an_error(minilm_fp32, tmp_path):
    build_dense_index(["a"], np.ones((1, 384), np.float32), tmp_path / "d", encoder=minilm_fp32.config.to_dict())
    other = DenseEncoder(encoder_config("minilm", pooling="cls"), dtype="fp32")
    with pytest.raises(InvalidIndexError, match="query encoder does not match the index"):
        DenseSearcher(tmp_path / "d", encoder=other)
