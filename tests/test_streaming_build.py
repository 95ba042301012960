"""A concept build streams (Step 19, item 2): codes go straight into ``doc_codes/``'s files a chunk of rows at a time
and everything after reads them back a chunk at a time, from embeddings that may be a memory map. The files, the
quantiser and Lucene's postings are those of the build that held every code in memory, whatever the chunk size; the
quantiser's percentile is NumPy's bit for bit without a copy of the activations; the words, the reordered
embeddings and the pseudo-queries are the same streamed as loaded.

The in-memory reference is computed here as the build computed it before it streamed: one ``encode_numpy`` over
all the rows, float16 activations, ``np.percentile`` over the positive float32 copies, ``np.save``.
"""

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pytest

from clsr.index.streaming import open_npy, percentile, read_rows, release, row_chunks

# -- the exact percentile ----------------------------------------------------------------------------------------


def _same(a, b) -> bool:
    """The same type and the same bits."""
    return type(a) is type(b) and np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_percentile_is_numpys_bit_for_bit(dtype):
    """Random arrays with ties, zeros, negatives and NaN, read in chunks of any size: the bit-pattern percentile
    equals ``np.percentile`` of the positive values (computed in float32 for float16, as the build does)."""
    rng = np.random.default_rng(11)
    as_dtype = np.float32 if dtype == np.float16 else dtype
    for trial in range(60):
        rows = int(rng.integers(1, 2000))
        values = (rng.standard_normal((rows, 5)) * rng.choice([1e-3, 1.0, 40.0])).astype(dtype)
        if trial % 4 == 0:
            values = np.abs(values).round(1).astype(dtype)  # many ties
        if trial % 7 == 0:
            values[0, 0] = np.nan
        positive = values[values > 0].astype(as_dtype)
        if positive.size == 0:
            continue
        for q in (99.9, 100, 0, 50, 12.5, 99.99):
            got = percentile(values, q, chunk_rows=int(rng.integers(1, 300)), as_dtype=as_dtype)
            assert _same(got, np.percentile(positive, q)), (dtype, rows, q)


def test_the_percentile_refuses_what_has_none():
    with pytest.raises(ValueError, match="no positive"):
        percentile(np.zeros((4, 3), np.float16), 99.9)
    with pytest.raises(ValueError, match="percentile"):
        percentile(np.ones((4, 3), np.float32), 101)


# -- chunk helpers ----------------------------------------------------------------------------------------------


def test_row_chunks_cover_the_rows():
    assert list(row_chunks(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(row_chunks(0, 4)) == []
    with pytest.raises(ValueError):
        list(row_chunks(3, 0))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float16, np.float32])
def test_an_npy_written_in_chunks_is_np_saves(tmp_path, dtype):
    """open_npy, filled a chunk at a time with each chunk's pages handed back, leaves the bytes np.save writes."""
    array = (np.arange(1000 * 7) % 5000).astype(dtype).reshape(1000, 7)
    written = open_npy(tmp_path / "x.npy", dtype, array.shape)
    for start, stop in row_chunks(len(array), 64):
        written[start:stop] = array[start:stop]
        release(written, start, stop)
    written.flush()
    del written
    expected = io.BytesIO()
    np.save(expected, array)
    assert (tmp_path / "x.npy").read_bytes() == expected.getvalue()


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_a_pass_over_a_memory_map_hands_its_pages_back(tmp_path):
    """Reading a 64 MB memory-mapped file a chunk at a time leaves a few MB resident, not 64: what bounds a build's
    memory by a chunk when its embeddings are a 13 GB file."""
    np.save(tmp_path / "big.npy", np.ones((16384, 1024), np.float32))
    mapped = np.load(tmp_path / "big.npy", mmap_mode="r")
    before, total = _resident_bytes(), 0.0
    for start, stop in row_chunks(len(mapped), 512):  # 2 MB a chunk
        total += float(read_rows(mapped, start, stop).sum())
    assert total == 16384 * 1024
    assert _resident_bytes() - before < 16 << 20


def test_a_copy_on_write_map_keeps_its_changes(tmp_path):
    """Pages of a copy-on-write map hold this process's changes: they are never handed back."""
    np.save(tmp_path / "x.npy", np.zeros((4096, 16), np.float32))
    private = np.load(tmp_path / "x.npy", mmap_mode="c")
    private[:] = 7
    assert read_rows(private, 0, 4096).min() == 7 and private.min() == 7


# -- the build --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slice_build(tmp_path_factory, scifact_slice):
    """The slice's embeddings as an in-memory array and as a memory map, the SAE, the words, and the reference
    codes computed as the in-memory build did."""
    from clsr.index.doc_codes import ACTIVATION_DTYPE
    from clsr.index.lucene import BM25_B, BM25_K1
    from clsr.index.words import corpus_words
    from clsr.sae.model import TopKSae, default_sae_path

    folder = tmp_path_factory.mktemp("streaming")
    embeddings = np.asarray(scifact_slice.doc_vectors, np.float32)
    np.save(folder / "embeddings.npy", embeddings)
    sae = TopKSae.load_from_disk(default_sae_path())
    values, latents = sae.encode_numpy(embeddings, 64)  # one batch: 300 rows, as before streaming
    activations = values.astype(ACTIVATION_DTYPE).astype(np.float32)
    words = corpus_words([d.text for d in scifact_slice.documents], BM25_K1, BM25_B,
                         scifact_slice.encoder.config.max_length, progress=False)
    return {"folder": folder, "embeddings": embeddings, "mapped": np.load(folder / "embeddings.npy", mmap_mode="r"),
            "sae": sae, "sae_path": default_sae_path(), "words": words, "activations": activations,
            "latents": latents, "scale": float(255 / np.percentile(activations[activations > 0], 99.9))}


def _build(slice_build, scifact_slice, name: str, embeddings, **options) -> Path:
    from clsr.index import build_concept_index

    index = slice_build["folder"] / name
    build_concept_index(scifact_slice.doc_ids, embeddings, index, sae=slice_build["sae"],
                        sae_path=slice_build["sae_path"], encoder=scifact_slice.encoder.config.to_dict(),
                        encoding=scifact_slice.encoder.encoding, doc_k=64, source="scifact", progress=False,
                        words=slice_build["words"], words_weight=0.3, normalization="self", **options)
    return index


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(index: Path) -> dict:
    from clsr.index import read_manifest

    manifest = dataclasses.asdict(read_manifest(index))
    for key in ("created", "timings", "lucene_bytes"):  # Lucene's threads split segments as they go
        del manifest[key]
    return manifest


def test_the_quantiser_fits_real_activations_as_np_percentile_did(slice_build, tmp_path):
    """On the slice's real activations, float32 in memory and float16 memory-mapped in chunks of 64 rows, the
    fitted scale is the one ``np.percentile`` over the positive float32 copies gave."""
    from clsr.index.concepts import Quantizer
    from clsr.index.doc_codes import ACTIVATION_DTYPE

    activations = slice_build["activations"]
    assert Quantizer.fit(activations, 8).scale == slice_build["scale"]
    np.save(tmp_path / "activations.npy", activations.astype(ACTIVATION_DTYPE))
    stored = np.load(tmp_path / "activations.npy", mmap_mode="r")
    assert Quantizer.fit(stored, 8, chunk_rows=64).scale == slice_build["scale"]
    weights = np.random.default_rng(0).random(5000) * 7  # words fit their float64 weights' largest
    assert Quantizer.fit(weights, 8, percentile=100).scale == float(255 / np.percentile(weights, 100))


def test_a_streamed_build_is_the_in_memory_build(slice_build, scifact_slice):
    """An in-memory array with the default chunk, and a memory map in chunks of 64 rows (five chunks of the
    slice's 300): the same doc_codes/ bytes as np.save of the reference codes, the same doc_words/, the same manifest,
    and every passage's Lucene vector the reference impacts and its words."""
    from clsr.index.concepts import Quantizer, concept_term
    from clsr.index.doc_codes import ACTIVATION_DTYPE
    from clsr.search import ClsrSearcher

    whole = _build(slice_build, scifact_slice, "whole", slice_build["embeddings"])
    chunked = _build(slice_build, scifact_slice, "chunked", slice_build["mapped"], chunk_rows=64)
    expected = {}
    for name, array in (("latents.npy", slice_build["latents"].astype(np.uint16)),
                        ("activations.npy", slice_build["activations"].astype(ACTIVATION_DTYPE))):
        saved = io.BytesIO()
        np.save(saved, array)
        expected[name] = saved.getvalue()
    for index in (whole, chunked):
        codes = _files(index / "doc_codes")
        assert {name: codes[name] for name in expected} == expected
        assert codes["ids.txt"] == "\n".join(scifact_slice.doc_ids).encode()
    assert _files(chunked / "doc_codes") == _files(whole / "doc_codes")
    assert _files(chunked / "doc_words") == _files(whole / "doc_words")
    assert _manifest(chunked) == _manifest(whole)
    assert _manifest(whole)["doc_quantizer"]["scale"] == slice_build["scale"]

    impacts = Quantizer(slice_build["scale"], 8).quantize(slice_build["activations"])
    searchers = ClsrSearcher(whole), ClsrSearcher(chunked)
    for row, docid in enumerate(scifact_slice.doc_ids):
        vector = {concept_term(int(latent)): int(impact)
                  for latent, impact in zip(slice_build["latents"][row], impacts[row]) if impact > 0}
        vector.update(slice_build["words"][0].vector(row))
        assert searchers[0].doc_vector(docid) == vector == searchers[1].doc_vector(docid), docid


def test_codes_given_are_read_in_chunks(slice_build, scifact_slice):
    """Codes computed elsewhere (Ray's shards: float32 activations, int32 latents, memory-mapped) make the same
    doc_codes/ and manifest, read 50 rows at a time."""
    folder = slice_build["folder"]
    np.save(folder / "shard-activations.npy", slice_build["activations"])
    np.save(folder / "shard-latents.npy", slice_build["latents"].astype(np.int32))
    codes = (np.load(folder / "shard-activations.npy", mmap_mode="r"),
             np.load(folder / "shard-latents.npy", mmap_mode="r"))
    given = _build(slice_build, scifact_slice, "given-codes", slice_build["mapped"], codes=codes, chunk_rows=50)
    whole = slice_build["folder"] / "whole"
    if not whole.exists():
        whole = _build(slice_build, scifact_slice, "whole", slice_build["embeddings"])
    assert _files(given / "doc_codes") == _files(whole / "doc_codes")
    assert _manifest(given) == _manifest(whole)


# -- words, embeddings and pseudo-queries, streamed ---------------------------------------------------------------


def _reference_weights(token_lists, k1: float, b: float):
    """The words' BM25 weights as word_weights computed them before it streamed: a Counter per passage, all held."""
    import math
    from collections import Counter

    from clsr.index.words import lucene_length

    counts = [Counter(tokens) for tokens in token_lists]
    lengths = np.array([sum(c.values()) for c in counts], np.float64)
    avgdl = float(lengths.mean())
    df = Counter()
    for c in counts:
        df.update(c.keys())
    vocabulary = sorted(df)
    index = {w: i for i, w in enumerate(vocabulary)}
    idf = np.array([math.log(1 + (len(counts) - df[w] + 0.5) / (df[w] + 0.5)) for w in vocabulary])
    words, weights = [], []
    for row, c in enumerate(counts):
        ids = np.fromiter((index[w] for w in c), np.int64, len(c))
        order = np.argsort(ids, kind="stable")
        tf = np.fromiter(c.values(), np.float64, len(c))[order]
        norm = k1 * (1 - b + b * lucene_length(int(lengths[row])) / max(avgdl, 1e-9))
        words.append(ids[order])
        weights.append(idf[ids[order]] * tf / (tf + norm))
    return vocabulary, np.concatenate(words), np.concatenate(weights)


def test_words_streamed_in_chunks_are_the_held_ones(scifact_slice):
    """Tokens from a generator, weighed 7 passages at a time: the weights, bit for bit, and the impacts of the
    reference that held every passage's counts."""
    from clsr.index.concepts import Quantizer
    from clsr.index.lucene import BM25_B, BM25_K1
    from clsr.index.words import analyze, word_impacts, word_weights

    tokens = [analyze(d.text) for d in scifact_slice.documents]
    vocabulary, words, weights = _reference_weights(tokens, BM25_K1, BM25_B)
    weighed = word_weights(iter(tokens), BM25_K1, BM25_B)
    assert weighed.vocabulary == vocabulary
    assert np.array_equal(weighed.words, words) and weighed.weights.tobytes() == weights.tobytes()
    doc_words, record = word_impacts((t for t in tokens), BM25_K1, BM25_B, chunk_rows=7)
    quantizer = Quantizer(scale=float(255 / np.percentile(weights, 100)), bits=8)
    assert record.quantizer == quantizer.to_dict()
    assert np.array_equal(doc_words.impacts, quantizer.quantize(weights).astype(np.uint8))
    assert doc_words.impacts.dtype == np.uint8 and np.array_equal(doc_words.indptr, weighed.indptr)


def test_embeddings_are_put_in_order_a_chunk_at_a_time(tmp_path):
    """In order: the same memory map, nothing copied; out of order, with a scratch folder: a memory map of the
    rows in the corpus's order, the rows the in-memory reorder gives."""
    from clsr.encode.embeddings import read_embeddings, write_embeddings

    rows = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    ids = [f"d{i}" for i in range(500)]
    order = np.random.default_rng(4).permutation(500)
    write_embeddings(tmp_path / "emb", [ids[i] for i in order], rows[order],
                     {"model": "m", "pooling": "mean", "normalize": True, "query_prefix": "", "max_length": 256},
                     {"backend": "torch", "dtype": "fp32"})
    given = read_embeddings(tmp_path / "emb")
    same = given.in_order(given.ids)
    assert same.embeddings is given.embeddings
    (tmp_path / "scratch").mkdir()
    streamed = given.in_order(ids, scratch=tmp_path / "scratch", chunk_rows=64)
    assert isinstance(streamed.embeddings, np.memmap) and streamed.ids == ids
    assert np.array_equal(streamed.embeddings, rows)
    assert np.array_equal(given.in_order(ids).embeddings, rows)


def test_pseudo_queries_streamed_from_the_source_are_the_loaded_ones(shared_data):
    """The alpha tuning's pseudo-queries, drawn from the corpus streamed twice, are those drawn from the loaded
    corpus for the same seed (exact-run tests depend on them)."""
    from clsr.data import load_corpus
    from clsr.fusion import pseudo_queries

    documents = load_corpus("scifact")
    for seed, n in ((0, 300), (5, 40), (1, 10**6)):
        assert pseudo_queries("scifact", n, seed=seed) == pseudo_queries(documents, n, seed=seed)
