"""A concept index served by Milvus: export (``clsr export milvus``) and search (``--backend milvus``).

The collection holds, per passage: ``docid`` (primary key), ``concepts`` (a SPARSE_FLOAT_VECTOR whose
keys are latent ids and whose values are exactly the integer impacts the Lucene index holds, sent
as floats because pymilvus refuses integer weights) and ``reconstructed`` (the decoded embedding,
a FLOAT_VECTOR, for the hybrid's dense side). The collection's description is a JSON record: the
concept index's manifest (encoder, SAE sha256, doc K, quantisers), so a search with another SAE or
encoder is refused as for Lucene, plus the query terms Pyserini would drop (see ``dropped_terms``).

Scores are inner products of integer impacts, summed in float32 like Lucene's; clsr refuses
settings whose scores could pass 2**24 (``clsr.index.concepts.check_exact_scores``), so they are exact
and equal Lucene's. Ties are broken by ``clsr.evaluate.trec_eval_order`` (score, then docid, both
descending) after searching ``TIE_MARGIN`` hits deeper, so that the cut at k follows that rule too.

The URI is a file path (Milvus Lite, embedded: ``pip install 'clsr[milvus]'``) or a server address
(``http://host:19530``); the same ``pymilvus.MilvusClient`` code serves both.

Exports are atomic. Milvus Lite implements neither renaming nor aliases, so a small registry
collection (``clsr_collections``) maps each name to the physical collection that holds it
(``<name>__clsr_<stamp>``). Rows go into a new physical collection, and the registry row is written
(one upsert) only when every row is in and flushed; searches go through the registry, so an
interrupted export leaves an unregistered collection that nothing opens and the next export drops.
An overwrite swaps the registry row first and drops the old collection afterwards.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from clsr import __version__
from clsr.errors import ClsrError
from clsr.evaluate import Run, trec_eval_order
from clsr.index import DocCodes, IndexManifest, InvalidIndexError, read_manifest
from clsr.progress import progress_bar

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "clsr"
DEFAULT_URI = "clsr-milvus.db"
REGISTRY = "clsr_collections"  # name -> physical collection, written last: what makes an export complete
PHYSICAL_INFIX = "__clsr_"
FORMAT = "clsr-milvus-1"
DOCID, CONCEPTS, RECONSTRUCTED = "docid", "concepts", "reconstructed"
# Milvus's exact sparse scorer. The default (DAAT_MAXSCORE) gives the same results but was 7x slower
# on Milvus Lite 2.5.1 at 100k-1M synthetic passages (issue 15's measurements, rechecked in benchmarks/scale.py).
# Milvus's sparse index algorithms: exact term-at-a-time, and two dynamic-pruning document-at-a-time ones
# (benchmarks/engines.py compares them; docs/concept-index.md, "Engines").
INVERTED_INDEX_ALGOS = ("TAAT_NAIVE", "DAAT_MAXSCORE", "DAAT_WAND")
SPARSE_INDEX = {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "IP",
                "params": {"inverted_index_algo": "TAAT_NAIVE"}}
DENSE_INDEX = {"index_type": "FLAT", "metric_type": "IP"}  # exact, as FAISS flat in the Lucene hybrid
MAX_LIMIT = 16384  # Milvus's largest top-k
TIE_MARGIN = 100  # extra hits searched so that ties at the cut are broken by clsr's rule, not Milvus's
EXPORT_BATCH = 1000


class MilvusError(ClsrError, RuntimeError):
    """A collection that cannot be exported, found or searched as asked."""


def milvus_client(uri: str):
    """A ``pymilvus.MilvusClient`` for a file path (Milvus Lite) or a server address.

    Raises MilvusError, one line, when pymilvus (and for a file, milvus-lite) is not installed.
    """
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusError("the Milvus backend needs pymilvus and Milvus Lite: pip install 'clsr[milvus]'") from None
    is_server = "://" in uri
    if not is_server:
        try:
            import milvus_lite  # noqa: F401  (pymilvus starts it for a file path; fail here with the fix)
        except ImportError:
            raise MilvusError(f"{uri} is a file path, which needs Milvus Lite: pip install 'clsr[milvus]'") from None
        Path(uri).resolve().parent.mkdir(parents=True, exist_ok=True)
        uri = str(Path(uri).resolve())
    return MilvusClient(uri)


def dropped_terms(latents: np.ndarray, impacts: np.ndarray) -> list[int]:
    """Latents in every document: Pyserini gives them idf log(N/df) = 0 and drops them from queries
    (``LuceneImpactSearcher``, min_idf 0), so the Milvus backend drops them too."""
    n = len(latents)
    present = np.bincount(np.asarray(latents)[np.asarray(impacts) > 0].ravel())
    return np.flatnonzero(present >= n).tolist() if n else []


def broad_concepts(codes: DocCodes) -> list[int]:
    """The latents that fire on at least `clsr.interpret.describers.BROAD_SHARE` of the index's passages, sorted:
    what explanations fold into one "broad" line. Recorded at export because a collection has no doc_codes to
    count them from, and the catalogue may be absent; only these are kept (a few hundred at most, where every
    latent's count would swell the collection's description)."""
    from clsr.interpret.describers import BROAD_SHARE, corpus_df_shares

    return np.flatnonzero(corpus_df_shares(codes.latents, codes.activations) >= BROAD_SHARE).tolist()


def _doc_vectors(codes: DocCodes, quantizer, start: int, stop: int, words=None, n_latents: int = 0
                 ) -> list[dict[int, float]]:
    """Rows start..stop as {term id: impact}: the very impacts the Lucene index holds (same quantiser). Concept
    ``c123`` is id 123; with ``words`` (an index's `clsr.index.words.DocWords`), word ``w`` of its vocabulary is
    ``n_latents + w``, as `clsr.search.engines.DocImpacts` numbers them."""
    from clsr.index.concepts import concept_latent, impact_vectors

    vectors = impact_vectors(np.asarray(codes.activations[start:stop]), np.asarray(codes.latents[start:stop]),
                             quantizer)
    rows = [{concept_latent(term): float(impact) for term, impact in vector.items()} for vector in vectors]
    if words is not None:
        for row, vector in zip(range(start, stop), rows):
            begin, end = words.indptr[row], words.indptr[row + 1]
            vector.update({n_latents + int(w): float(i) for w, i in zip(words.words[begin:end].tolist(),
                                                                        words.impacts[begin:end].tolist())})
    return rows


def _iter_batches(n: int, batch: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch):
        yield start, min(start + batch, n)


def export_index(index_dir: str | os.PathLike, uri: str = DEFAULT_URI, collection: str = DEFAULT_COLLECTION, *,
                 overwrite: bool = False, batch_size: int = EXPORT_BATCH, progress: bool = True,
                 stop_after: int | None = None, inverted_index_algo: str = "TAAT_NAIVE") -> dict:
    """Write a concept index's passages into the Milvus collection ``collection`` at ``uri``.

    Returns the record stored as the collection's description (the index manifest and export
    details, with ``export_seconds``). Refuses an existing collection unless ``overwrite``. Rows go
    in ``batch_size`` at a time into a new physical collection, registered under ``collection`` at the end.
    ``stop_after`` (rows) simulates an interruption, for tests: it raises KeyboardInterrupt there.
    ``inverted_index_algo`` is Milvus's algorithm for the sparse index, one of :data:`INVERTED_INDEX_ALGOS`.
    """
    from clsr.index.concepts import Quantizer

    if inverted_index_algo not in INVERTED_INDEX_ALGOS:
        raise ValueError(f"inverted_index_algo must be one of {INVERTED_INDEX_ALGOS}, not {inverted_index_algo!r}")
    from clsr.search.concept_encoder import load_index_sae

    manifest = read_manifest(index_dir)
    if manifest.kind != "concepts":
        raise InvalidIndexError(f"{index_dir} is a {manifest.kind} index; only concept indexes export to Milvus")
    codes = DocCodes(index_dir)
    sae = load_index_sae(index_dir, manifest)  # the decoded embeddings are derived from the codes
    words = None
    if manifest.words is not None:  # the words go in beside the concepts, numbered after them
        from clsr.index.words import DOC_WORDS_DIR, read_doc_words

        words = read_doc_words(Path(index_dir) / DOC_WORDS_DIR)
    n = manifest.documents
    quantizer = Quantizer.from_dict(manifest.doc_quantizer)
    start_time = time.perf_counter()
    record = {
        "format": FORMAT, "clsr_version": __version__, "collection": collection,
        "source_index": str(Path(index_dir).resolve()), "documents": n,
        "dropped_terms": dropped_terms(np.asarray(codes.latents), quantizer.quantize(np.asarray(codes.activations))),
        "broad_concepts": broad_concepts(codes),
        "exported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "index_manifest": manifest.to_dict(),
    }

    def rows(start: int, stop: int) -> tuple[list[dict[int, float]], np.ndarray]:
        return (_doc_vectors(codes, quantizer, start, stop, words, sae.config.n_latents),
                codes.decoded(slice(start, stop), sae))

    sparse_index = {**SPARSE_INDEX, "params": {"inverted_index_algo": inverted_index_algo}}
    write_collection(uri, collection, record, codes.ids, rows, sae.config.d_in, overwrite=overwrite,
                     sparse_index=sparse_index,
                     batch_size=batch_size, progress=progress, stop_after=stop_after)
    record["export_seconds"] = round(time.perf_counter() - start_time, 3)
    return record


def write_collection(uri: str, collection: str, record: dict, ids: Sequence[str],
                     rows: Callable[[int, int], tuple[list[dict[int, float]], np.ndarray]], dim: int, *,
                     overwrite: bool = False, batch_size: int = EXPORT_BATCH, progress: bool = True,
                     stop_after: int | None = None, sparse_index: Mapping = SPARSE_INDEX) -> str:
    """Create, fill and register ``collection``; returns the physical collection's name.

    ``rows(start, stop)`` gives rows start..stop: their sparse vectors ({latent: impact as float})
    and (stop - start, dim) float32 dense vectors. ``record`` becomes the collection's description.
    The registry row is written last, so only a complete collection is ever found by name.
    """
    client = milvus_client(uri)
    previous = registered(client, collection)
    if previous is not None and not overwrite:
        raise MilvusError(f"collection {collection!r} already exists at {uri}; pass --overwrite to replace it")
    for stale in client.list_collections():  # left by interrupted exports of this name
        if stale.startswith(collection + PHYSICAL_INFIX) and stale != previous:
            log.warning("dropping %s, left by an interrupted export", stale)
            client.drop_collection(stale)
    building = f"{collection}{PHYSICAL_INFIX}{time.time_ns():x}"
    from pymilvus import DataType  # after milvus_client, which says which extra is missing

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=json.dumps(record))
    schema.add_field(DOCID, DataType.VARCHAR, is_primary=True, max_length=max(1, max(len(d.encode()) for d in ids)))
    schema.add_field(CONCEPTS, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field(RECONSTRUCTED, DataType.FLOAT_VECTOR, dim=dim)
    index_params = client.prepare_index_params()
    index_params.add_index(field_name=CONCEPTS, **sparse_index)
    index_params.add_index(field_name=RECONSTRUCTED, **DENSE_INDEX)
    client.create_collection(building, schema=schema, index_params=index_params)

    n, written = len(ids), 0
    with progress_bar(total=n, desc=f"exporting to Milvus {collection}", unit="doc", enabled=progress) as bar:
        for start, stop in _iter_batches(n, batch_size):
            if stop_after is not None and written >= stop_after:
                raise KeyboardInterrupt(f"export stopped after {written} rows (stop_after)")
            vectors, dense = rows(start, stop)
            client.insert(building, [{DOCID: ids[row], CONCEPTS: vector, RECONSTRUCTED: values.tolist()}
                                     for row, vector, values in zip(range(start, stop), vectors, dense)])
            written += stop - start
            bar.update(stop - start)
    client.flush(building)
    stored = client.get_collection_stats(building)["row_count"]
    if stored != n:
        raise MilvusError(f"{building} holds {stored} rows after the export, expected {n}; left unpublished")
    _registry(client).upsert(REGISTRY, [{"name": collection, "physical": building, "unused": [0.0, 0.0]}])
    if previous is not None:  # overwrite: the old one goes only once the new one is registered
        client.drop_collection(previous)
    return building


def _registry(client):
    """The registry collection, created on first use (Milvus wants a vector field in every collection)."""
    from pymilvus import DataType

    if not client.has_collection(REGISTRY):
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                      description="clsr: collection name -> the physical collection holding it")
        schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=255)
        schema.add_field("physical", DataType.VARCHAR, max_length=512)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        client.create_collection(REGISTRY, schema=schema, index_params=index_params)
    client.load_collection(REGISTRY)
    return client


def registered(client, collection: str) -> str | None:
    """The physical collection a complete export of ``collection`` lives in; None if there is none."""
    if not client.has_collection(REGISTRY):
        return None
    rows = _registry(client).get(REGISTRY, ids=[collection], output_fields=["physical"])
    return str(rows[0]["physical"]) if rows else None


def collection_names(uri: str) -> list[str]:
    """The names of the complete clsr exports at ``uri``."""
    client = milvus_client(uri)
    if not client.has_collection(REGISTRY):
        return []
    return sorted(str(row["name"]) for row in _registry(client).query(REGISTRY, filter='name != ""',
                                                                      output_fields=["name"]))


def collection_record(client, collection: str, uri: str) -> tuple[str, dict]:
    """(physical collection, the JSON record its export stored); a one-line MilvusError if there is none."""
    physical = registered(client, collection)
    if physical is None or not client.has_collection(physical):
        interrupted = any(name.startswith(collection + PHYSICAL_INFIX) for name in client.list_collections())
        raise MilvusError(f"no collection {collection!r} at {uri}"
                          + ("; an export of it was interrupted: run `clsr export milvus` again" if interrupted
                             else "; export one with `clsr export milvus --index IDX`"))
    try:
        record = json.loads(client.describe_collection(physical).get("description", ""))
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MilvusError(f"collection {collection!r} at {uri} was not exported by clsr (no {FORMAT} record)")
    return physical, record


class MilvusSearcher:
    """Search a concept collection in Milvus, as ``clsr.search.ClsrSearcher`` searches Lucene.

    The same query encoder (from the collection's manifest, with the same refusals), steering and
    hit type (``ConceptHit`` with shared concepts); scores equal Lucene's. Options are those of
    ``clsr.index.load_concept_encoder`` (encoder, sae_path, query_k, query_mode, force, ...).
    """

    def __init__(self, uri: str = DEFAULT_URI, collection: str = DEFAULT_COLLECTION,
                 steering: Mapping[int, float] | None = None, search_params: Mapping | None = None, **options):
        from clsr.search.concept_encoder import load_concept_encoder
        from clsr.search.pyserini import ClsrQueryEncoder

        self.uri, self.name = uri, collection
        self.client = milvus_client(uri)
        self.collection, self.record = collection_record(self.client, collection, uri)
        self.manifest = IndexManifest.from_dict(self.record["index_manifest"],
                                                where=f"Milvus collection {collection!r} at {uri}")
        self.concept_encoder = load_concept_encoder(self.record["source_index"], manifest=self.manifest,
                                                    where=f"Milvus collection {collection!r} at {uri}", **options)
        self.concept_encoder.steering = dict(steering or {})
        self.query_encoder = ClsrQueryEncoder(concept_encoder=self.concept_encoder)
        self._dropped = {f"c{latent}" for latent in self.record["dropped_terms"]}
        self.broad_concepts = self.record.get("broad_concepts")  # None: exported before clsr recorded them
        # e.g. {"drop_ratio_search": 0.2}: skip that share of the query's smallest weights (approximate)
        self.search_params = dict(search_params or {})
        self.client.load_collection(self.collection)

    def searchable(self, vector: Mapping[str, int]) -> dict[str, int]:
        """The query vector without the terms Pyserini would drop (in every document: idf 0)."""
        return {term: weight for term, weight in vector.items() if term not in self._dropped}

    def _term_id(self, term: str) -> int | None:
        """A query term's id in the collection (`_doc_vectors`), None for a word the index does not hold."""
        from clsr.index.concepts import concept_latent
        from clsr.index.words import is_word_term, word_of

        if is_word_term(term):
            words = self.concept_encoder.words
            word = words.vocabulary.get(word_of(term)) if words is not None else None
            return None if word is None else self.manifest.sae.n_latents + word
        return concept_latent(term)

    def _term(self, term_id: int) -> str:
        from clsr.index.words import word_term

        n_latents = self.manifest.sae.n_latents
        if term_id < n_latents:
            return f"c{term_id}"
        return word_term(self.concept_encoder.words.words[term_id - n_latents])

    def _search_many(self, vectors: Sequence[Mapping[str, int]], k: int) -> list[list[tuple[str, float]]]:
        results: list[list[tuple[str, float]]] = []
        limit = min(k + TIE_MARGIN, MAX_LIMIT)
        queries = [{i: float(w) for t, w in self.searchable(v).items() if (i := self._term_id(t)) is not None}
                   for v in vectors]
        todo = [i for i, q in enumerate(queries) if q]
        found = self.client.search(self.collection, data=[queries[i] for i in todo], anns_field=CONCEPTS,
                                   limit=limit, search_params={"metric_type": "IP", "params": self.search_params},
                                   output_fields=[]) if todo else []
        by_query = dict(zip(todo, found))
        for i in range(len(queries)):
            hits = [(str(h["id"]), float(h["distance"])) for h in by_query.get(i, [])]
            results.append(trec_eval_order(hits)[:k])
        return results

    def search_vector(self, vector: Mapping[str, int], k: int = 10):
        """Search with a ready {term: integer weight} query; [Hit(docid, score)] in trec_eval order."""
        from clsr.search import Hit

        return [Hit(d, s) for d, s in self._search_many([vector], k)[0]]

    def doc_vector(self, docid: str) -> dict[str, int]:
        """The document's {term: impact}, as stored (= the Lucene index's)."""
        rows = self.client.get(self.collection, ids=[docid], output_fields=[CONCEPTS])
        if not rows:
            raise KeyError(f"document {docid!r} is not in collection {self.name!r}")
        return {self._term(int(term)): int(round(weight)) for term, weight in rows[0][CONCEPTS].items()}

    def shared_concepts(self, vector: Mapping[str, int], docid: str):
        from clsr.search import shared_concepts

        return shared_concepts(self.searchable(vector), self.doc_vector(docid))

    def search(self, query: str, k: int = 10):
        from clsr.search import ConceptHit

        with self.query_encoder.encoded([query]):
            vector = self.query_encoder.encode(query)
        return [ConceptHit(h.docid, h.score, self.shared_concepts(vector, h.docid))
                for h in self.search_vector(vector, k)]

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1, batch_size: int = 1,
                     progress: bool | None = None) -> Run:
        """A run for many queries: encoded in batches, sent to Milvus ``batch_size`` at a time.

        ``threads`` is accepted for ``ClsrSearcher``'s signature; Milvus parallelises on its side.
        """
        from clsr.search import Hit

        qids = list(queries)
        progress = len(qids) > 100 if progress is None else progress
        texts = [queries[q] for q in qids]
        run: Run = {}
        step = max(batch_size, 1)
        with self.query_encoder.encoded(texts, progress=progress):
            vectors = [self.query_encoder.encode(text) for text in texts]
        with progress_bar(total=len(qids), desc="searching Milvus", unit="query", enabled=progress) as bar:
            for start in range(0, len(qids), step):
                results = self._search_many(vectors[start:start + step], k)
                run.update({qid: [Hit(d, s) for d, s in hits] for qid, hits in zip(qids[start:start + step], results)})
                bar.update(len(results))
        return run

    def reconstructions(self, docids: Sequence[str]) -> np.ndarray:
        """(len(docids), d) float32 decoded embeddings, in the order given."""
        if not len(docids):
            return np.zeros((0, int(self.manifest.sae.d_in)), np.float32)
        rows = self.client.get(self.collection, ids=list(docids), output_fields=[RECONSTRUCTED])
        by_id = {str(row[DOCID]): row[RECONSTRUCTED] for row in rows}
        return np.asarray([by_id[d] for d in docids], np.float32)

    def reconstruction_scores(self, docids: Sequence[str], vector: np.ndarray) -> np.ndarray:
        """``vector`` dotted with these documents' decoded embeddings (as the collection stores them)."""
        return self.reconstructions(docids) @ np.asarray(vector, np.float32)

    def dense_search(self, vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Exact inner-product search (FLAT) of the reconstructions, for the hybrid's ``full`` mode."""
        found = self.client.search(self.collection, data=np.asarray(vectors, np.float32).tolist(),
                                   anns_field=RECONSTRUCTED, limit=min(k, MAX_LIMIT),
                                   search_params={"metric_type": "IP", "params": {}}, output_fields=[])
        return [[(str(h["id"]), float(h["distance"])) for h in hits] for hits in found]
