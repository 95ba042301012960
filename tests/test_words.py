"""One index, words and concepts (issue 31), on the 300-passage SciFact slice: the words' weights are BM25's, the
word part alone ranks as BM25, W = 0 is the concept-only index, explanations sum exactly to the score, the Pyserini
route and the engines give `clsr search`'s run, and a concept-only index still searches."""

import json
from pathlib import Path

import pytest

from clsr.cli import main as clsr
from clsr.evaluate import evaluate, read_run, trec_eval_order

pytestmark = [pytest.mark.slow, pytest.mark.numerics]


@pytest.fixture(scope="module")
def slice_files(tmp_path_factory, scifact_slice) -> Path:
    folder = tmp_path_factory.mktemp("words-slice")
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n"
                                                 for d in scifact_slice.documents))
    (folder / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in scifact_slice.topics.items()))
    return folder


@pytest.fixture(scope="module")
def indexes(slice_files) -> dict[str, Path]:
    """The slice as a words-and-concepts index (the default), a concept-only one and a BM25 one."""
    corpus = str(slice_files / "corpus.jsonl")
    common = ["--corpus", corpus, "--no-describe", "--no-tune-alpha", "--dtype", "fp32"]
    clsr(["index", *common, "--index", str(slice_files / "words")])
    clsr(["index", *common, "--index", str(slice_files / "concepts"), "--no-words"])
    clsr(["index", "--kind", "bm25", "--corpus", corpus, "--index", str(slice_files / "bm25")])
    return {name: slice_files / name for name in ("words", "concepts", "bm25")}


def _search(index: Path, topics: Path, output: Path, *extra: str) -> dict:
    clsr(["search", "--index", str(index), "--topics", str(topics), "--output", str(output), "--hits", "100", *extra])
    return read_run(output)


def test_word_weights_are_lucenes_bm25(indexes, scifact_slice):
    """Σ count · weight over a query's words is the score Lucene's BM25 gives (k1 0.9, b 0.4, its one-byte
    document lengths), to float32 rounding: the words are weighed as `clsr index --kind bm25` scores them."""
    from clsr.index.lucene import BM25_B, BM25_K1
    from clsr.index.words import analyze, word_weights
    from clsr.search import Bm25Searcher

    weighed = word_weights([analyze(d.text) for d in scifact_slice.documents], BM25_K1, BM25_B)
    vocabulary = {w: i for i, w in enumerate(weighed.vocabulary)}
    searcher = Bm25Searcher(indexes["bm25"])
    for text in list(scifact_slice.topics.values())[:25]:
        counts: dict[int, int] = {}
        for token in analyze(text):
            if token in vocabulary:
                counts[vocabulary[token]] = counts.get(vocabulary[token], 0) + 1
        for hit in searcher.search(text, k=20):
            row = scifact_slice.doc_ids.index(hit.docid)
            start, end = weighed.indptr[row], weighed.indptr[row + 1]
            ours = sum(counts.get(int(w), 0) * x for w, x in zip(weighed.words[start:end], weighed.weights[start:end]))
            # Lucene computes in float32 and lowers exact ties by 1e-6 steps (docs/command-line.md, "Score ties").
            assert ours == pytest.approx(hit.score, rel=1e-5, abs=1e-4), hit.docid


def test_the_word_part_alone_ranks_as_bm25(indexes, slice_files, scifact_slice):
    """A query of its words alone scores the exact integer dot products of the stored impacts, and ranks as
    BM25 does after quantisation: nDCG@10 within 0.005 of the BM25 index's on the slice (0.0005 on all of SciFact,
    benchmarks/results/mix-rule.md). Word weights involve no encoder, so this holds on every CPU."""
    from clsr.index.words import query_words
    from clsr.search import ClsrSearcher

    searcher = ClsrSearcher(indexes["words"])
    vocabulary = set(searcher.concept_encoder.words.vocabulary)
    run = {}
    for qid, text in scifact_slice.topics.items():
        vector = {t: c for t, c in query_words(text).items() if t[2:] in vocabulary}
        hits = searcher.search_vector(vector, k=100)
        for hit in hits[:5]:
            document = searcher.doc_vector(hit.docid)
            assert hit.score == sum(c * document.get(t, 0) for t, c in vector.items())
        run[qid] = hits
    bm25 = _search(indexes["bm25"], slice_files / "topics.tsv", slice_files / "bm25.trec")
    words, reference = (evaluate(r, scifact_slice.qrels, ["ndcg@10"])["ndcg@10"] for r in (run, bm25))
    assert abs(words - reference) <= 0.005, (words, reference)


def test_words_weight_zero_is_the_concept_only_index(indexes, slice_files):
    topics = slice_files / "topics.tsv"
    without = _search(indexes["concepts"], topics, slice_files / "c.trec", "--engine", "lucene")
    zero = _search(indexes["words"], topics, slice_files / "w0.trec", "--engine", "lucene", "--words-weight", "0")
    assert zero == without
    mixed = _search(indexes["words"], topics, slice_files / "w.trec", "--engine", "lucene")
    assert mixed != without


def test_a_hits_score_is_the_exact_sum_of_its_words_and_concepts(indexes, scifact_slice):
    from clsr.index.words import is_word_term
    from clsr.search import ClsrSearcher

    searcher = ClsrSearcher(indexes["words"])
    both = 0
    for text in list(scifact_slice.topics.values())[:20]:
        for hit in searcher.search(text, k=10):
            assert sum(c.contribution for c in hit.concepts) == hit.score
            kinds = {is_word_term(c.concept) for c in hit.concepts}
            both += kinds == {True, False}
    assert both > 100  # most hits share both words and concepts with their query


def test_engines_and_the_pyserini_route_give_clsr_searchs_run(indexes, slice_files, tmp_path, stock_pyserini_search):
    """Seismic and BMP hold the words too; encode-queries + stock `pyserini.search.lucene --impact` is the drop-in."""
    topics = slice_files / "topics.tsv"
    lucene = _search(indexes["words"], topics, tmp_path / "lucene.trec", "--engine", "lucene")
    for engine in ("seismic", "bmp"):
        pytest.importorskip(engine)
        run = _search(indexes["words"], topics, tmp_path / f"{engine}.trec", "--engine", engine)
        assert {q: h[:10] for q, h in run.items()} == {q: h[:10] for q, h in lucene.items()}, engine
    clsr(["encode-queries", "--index", str(indexes["words"]), "--topics", str(topics), "--output",
          str(tmp_path / "queries.jsonl"), "--topics-output", str(tmp_path / "topics.json")])
    vectors = [json.loads(line)["vector"] for line in (tmp_path / "queries.jsonl").open()]
    assert all(any(t.startswith("w:") for t in v) and any(t.startswith("c") for t in v) for v in vectors)
    stock_pyserini_search(indexes["words"], tmp_path / "topics.json", tmp_path / "queries.jsonl",
                          tmp_path / "stock.trec", hits=100)
    stock = read_run(tmp_path / "stock.trec")
    # Pyserini lists exact ties docid ascending, clsr in trec_eval's order (docs/command-line.md, "Score ties"); the
    # 100th hit may tie with the 101st, so the comparison stops short of it.
    assert {q: trec_eval_order(h)[:90] for q, h in stock.items()} == {q: h[:90] for q, h in lucene.items()}


def test_a_concept_only_index_still_searches_and_refuses_a_words_weight(indexes, slice_files, cli_error):
    from clsr.index import read_manifest

    assert read_manifest(indexes["concepts"]).words is None and read_manifest(indexes["words"]).words is not None
    assert read_manifest(indexes["words"]).query.words_weight == 0.4
    message = cli_error(["search", "--index", str(indexes["concepts"]), "--topics", str(slice_files / "topics.tsv"),
                         "--output", str(slice_files / "x.trec"), "--words-weight", "0.5"])
    assert "holds concepts only (built with --no-words or by an older clsr)" in message


def test_explanations_read_words_then_specific_then_broad_concepts(indexes, scifact_slice):
    """Issue 31's order of evidence: words first, then specific concepts, then the broad ones on one line; each
    kind's part of the score is given, and the parts sum exactly to the score."""
    from clsr.interpret.explain import KINDS, explain, format_explanation
    from clsr.interpret.explorer import Explorer
    from clsr.search import ClsrSearcher

    searcher = ClsrSearcher(indexes["words"])
    broad_seen = 0
    for text in list(scifact_slice.topics.values())[:10]:
        hit = searcher.search(text, 1)[0]
        explanation = explain(searcher, text, hit.docid)
        kinds = [c["kind"] for c in explanation["shared"]]
        assert kinds == sorted(kinds, key=KINDS.index) and kinds[0] == "word"
        assert sum(explanation["parts"].values()) == explanation["score"] == hit.score
        printed = format_explanation(explanation).splitlines()
        assert printed[3].split()[0] == "term"
        assert printed[4].split()[0] == explanation["shared"][0]["concept"][2:]  # the first row is a word, as itself
        assert any(line.startswith("carried by: words ") for line in printed)
        broad = [c for c in explanation["shared"] if c["kind"] == "broad"]
        if broad:
            broad_seen += 1
            (line,) = [line for line in printed if line.startswith("broad ")]
            assert f"{len(broad)} broad concept" in line and str(sum(c["contribution"] for c in broad)) in line
    assert broad_seen  # the bundled SAE has broad concepts on SciFact: the folded line is exercised
    explorer = Explorer(indexes["words"])
    result = explorer.search(list(scifact_slice.topics.values())[0], k=3)
    assert result["query_words"] and all(not c["concept"].startswith("w:") for c in result["query_concepts"])
    for hit in result["hits"]:
        assert hit["concepts"][0]["kind"] == "word" and sum(hit["parts"].values()) == hit["score"]


def test_a_words_weight_is_tuned_on_a_dev_split_and_recorded(indexes, slice_files, tmp_path, capsys, cli_error):
    """What a user with judgments does instead of the default W: tune-words-weight on a train or dev split."""
    import shutil

    from clsr.index import read_manifest

    index = tmp_path / "index"
    shutil.copytree(indexes["words"], index)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    shutil.copy(slice_files / "corpus.jsonl", beir / "corpus.jsonl")
    # 40 of the slice's claims as the dev split: the command searches them at each of its 12 weights.
    topics = dict(line.split("\t", 1) for line in (slice_files / "topics.tsv").read_text().splitlines()[:40])
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in topics.items()))
    from clsr.data import load_qrels

    qrels = load_qrels("scifact", "test")
    (beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q in topics for d, g in qrels[q].items()))
    assert "refusing to tune on the 'test' split" in cli_error(
        ["tune-words-weight", "--index", str(index), "--topics", str(beir), "--split", "test"])
    clsr(["tune-words-weight", "--index", str(index), "--topics", str(beir), "--split", "dev", "--record", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["default"] == 0.4 and set(printed["curve"]) >= {"0.0", "0.4", "1.0"}
    assert printed["curve"][str(printed["best"])] == max(printed["curve"].values())
    assert printed["curve"]["0.0"] < max(printed["curve"].values())  # words help on the slice
    assert read_manifest(index).query.words_weight == printed["best"]


def test_lucene_threads_change_neither_hits_nor_scores(indexes, slice_files):
    """`--threads` defaults to the machine's cores (issue 32); Lucene then indexes shards side by side and merges
    them, so its internal doc order differs, but not a run: same hits, same scores, same ties order."""
    corpus = str(slice_files / "corpus.jsonl")
    three = slice_files / "words-3-threads"
    clsr(["index", "--corpus", corpus, "--no-describe", "--no-tune-alpha", "--dtype", "fp32", "--threads", "3",
          "--index", str(three)])
    one = slice_files / "words-1-thread"
    clsr(["index", "--corpus", corpus, "--no-describe", "--no-tune-alpha", "--dtype", "fp32", "--threads", "1",
          "--index", str(one)])
    topics = slice_files / "topics.tsv"
    runs = [_search(index, topics, slice_files / f"{index.name}.trec", "--engine", "lucene") for index in (one, three)]
    assert runs[0] == runs[1] and len(runs[0]) == len(topics.read_text().splitlines())
    # The files line by line: ranks, so the order of tied hits, included.
    lines = [(slice_files / f"{index.name}.trec").read_text().splitlines() for index in (one, three)]
    assert lines[0] == lines[1]
    for name in ("latents.npy", "activations.npy", "ids.txt"):
        assert (one / "doc_codes" / name).read_bytes() == (three / "doc_codes" / name).read_bytes()
