"""`clsr index --embeddings DIR`: an index of embeddings `clsr encode` wrote (elsewhere) is the index the same build
makes by encoding, whatever order DIR's rows are in; an embeddings folder that does not fit is refused in one line.

On 300 SciFact passages, MiniLM pinned to fp32 (as the embeddings would be on any CPU), no alpha tuning or describing.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clsr.cli import main as clsr

FAST = ["--dtype", "fp32", "--no-tune-alpha", "--no-describe"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data) -> Path:
    """corpus.jsonl (300 SciFact passages), emb/ from `clsr encode`, and encoded/, the concept index built by
    encoding the corpus (the same vectors: `clsr encode` put them in the embedding cache)."""
    from clsr.data import load_corpus

    folder = tmp_path_factory.mktemp("given")
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n"
                                                 for d in load_corpus("scifact")[:300]))
    clsr(["encode", "--corpus", str(folder / "corpus.jsonl"), "--output", str(folder / "emb"), "--dtype", "fp32"])
    clsr(["index", "--corpus", str(folder / "corpus.jsonl"), "--index", str(folder / "encoded"), *FAST])
    return folder


def _index(work: Path, embeddings: Path, index: Path, *more: str) -> None:
    clsr(["index", "--corpus", str(work / "corpus.jsonl"), "--index", str(index), "--embeddings", str(embeddings),
          *FAST, *more])


def _copy(work: Path, target: Path, rows=None, ids=None, encoder=None) -> Path:
    """emb/ copied to ``target``, with its rows, ids or encoder.json replaced where given."""
    shutil.copytree(work / "emb", target)
    if rows is not None:
        np.save(target / "embeddings.npy", rows)
    if ids is not None:
        (target / "ids.txt").write_text("\n".join(ids), encoding="utf-8")
    if encoder is not None:
        (target / "encoder.json").write_text(json.dumps(encoder))
    return target


def _emb(work: Path) -> tuple[np.ndarray, list[str], dict]:
    return (np.load(work / "emb" / "embeddings.npy"), (work / "emb" / "ids.txt").read_text().split("\n"),
            json.loads((work / "emb" / "encoder.json").read_text()))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_index(given: Path, encoded: Path) -> None:
    """doc_codes/ byte for byte, the manifest but its times and Lucene's size, and five queries' hits and scores."""
    from clsr.data import load_topics
    from clsr.index import read_manifest
    from clsr.search import ClsrSearcher

    codes = _files(encoded / "doc_codes")
    assert codes and _files(given / "doc_codes") == codes
    manifests = [dataclasses.asdict(read_manifest(index)) for index in (given, encoded)]
    for manifest in manifests:
        # Lucene indexes with every core, and how its threads split the documents into
        # segments changes the folder's size by a few hundred bytes but no hit or score.
        del manifest["created"], manifest["timings"], manifest["lucene_bytes"]
    assert manifests[0] == manifests[1]
    assert manifests[0]["documents"] == 300
    topics = dict(list(load_topics("scifact", "test").items())[:5])
    runs = [ClsrSearcher(index).batch_search(topics, k=20) for index in (given, encoded)]
    assert runs[0] == runs[1]
    assert all(len(hits) == 20 for hits in runs[0].values())


def test_given_embeddings_make_the_index_that_encoding_makes(work, capsys):
    from clsr.index import read_manifest

    _index(work, work / "emb", work / "given")
    out = capsys.readouterr().out
    assert f"encoding: 300 embeddings given in {work / 'emb'}" in out
    _same_index(work / "given", work / "encoded")
    # The manifest records encoder.json's encoder and encoding, which the queries were encoded with.
    manifest = read_manifest(work / "given")
    recorded = json.loads((work / "emb" / "encoder.json").read_text())
    assert manifest.encoding == {"backend": recorded["backend"], "dtype": "fp32"}
    assert manifest.encoder == {k: v for k, v in recorded.items() if k not in ("backend", "dtype")}
    assert manifest.encoder["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_rows_in_another_order_are_put_in_the_corpus_order(work):
    rows, ids, _ = _emb(work)
    order = np.random.default_rng(7).permutation(len(ids))
    assert list(order) != sorted(order)
    shuffled = _copy(work, work / "emb-shuffled", rows=rows[order], ids=[ids[i] for i in order])
    _index(work, shuffled, work / "given-shuffled")
    _same_index(work / "given-shuffled", work / "encoded")


def test_a_dense_index_of_given_embeddings_is_the_encoded_one(work, capsys):
    from clsr.index import read_manifest

    rows, ids, recorded = _emb(work)
    reversed_ = _copy(work, work / "emb-reversed", rows=rows[::-1].copy(), ids=ids[::-1])
    clsr(["index", "--kind", "dense", "--corpus", str(work / "corpus.jsonl"), "--index", str(work / "dense"),
          "--dtype", "fp32"])
    clsr(["index", "--kind", "dense", "--corpus", str(work / "corpus.jsonl"), "--index", str(work / "dense-given"),
          "--embeddings", str(reversed_)])
    assert "encoding: 300 embeddings given in" in capsys.readouterr().out
    for name in ("embeddings.npy", "ids.txt"):
        assert (work / "dense-given" / name).read_bytes() == (work / "dense" / name).read_bytes()
    given, encoded = read_manifest(work / "dense-given"), read_manifest(work / "dense")
    assert given.documents == encoded.documents == 300
    assert given.encoder == encoded.encoder and given.encoding == encoded.encoding == {
        "backend": recorded["backend"], "dtype": "fp32"}


def test_embeddings_that_do_not_fit_are_refused_in_one_line(work, cli_error):
    rows, ids, recorded = _emb(work)
    folder = work / "refused"

    def refused(name: str, *more: str, **replaced) -> str:
        target = _copy(work, folder / name, **replaced)
        return cli_error(["index", "--corpus", str(work / "corpus.jsonl"), "--index", str(folder / f"{name}-index"),
                          "--embeddings", str(target), *FAST, *more])

    message = refused("missing", rows=rows[1:], ids=ids[1:])
    assert f"the embeddings in {folder / 'missing'} are not the corpus's: 1 corpus passage missing from ids.txt " \
           f"({ids[0]!r})" in message
    assert "not in the corpus" not in message
    message = refused("extra", rows=np.vstack([rows, rows[:1]]), ids=[*ids, "not-a-passage"])
    assert message.endswith("are not the corpus's: 1 id in ids.txt not in the corpus ('not-a-passage')")
    message = refused("swapped", rows=rows, ids=["x1", "x2", "x3", "x4", *ids[4:]])
    assert (f"4 corpus passages missing from ids.txt ({ids[0]!r}, {ids[1]!r}, {ids[2]!r} and 1 more); "
            "4 ids in ids.txt not in the corpus ('x1', 'x2', 'x3' and 1 more)") in message
    message = refused("repeated", rows=rows, ids=[ids[1], *ids[1:]])
    assert message.endswith(f"{folder / 'repeated' / 'ids.txt'} lists 1 id more than once ({ids[1]!r})")
    message = refused("rows", rows=rows[:299])
    assert message.endswith(f"{folder / 'rows' / 'embeddings.npy'} has 299 rows but {folder / 'rows' / 'ids.txt'} "
                            "has 300 ids: one row per id, in the same order")
    message = refused("narrow", rows=np.ascontiguousarray(rows[:, :100]))
    assert message.endswith("dimension mismatch: the SAE takes 384-d vectors (encoder "
                            "sentence-transformers/all-MiniLM-L6-v2), the embeddings in "
                            f"{folder / 'narrow' / 'embeddings.npy'} are 100-d")
    message = refused("bge", encoder={**recorded, "model": "BAAI/bge-base-en-v1.5", "pooling": "cls"})
    assert message.endswith(f"{folder / 'bge' / 'encoder.json'}: the SAE was trained on another encoder setting "
                            "(model: SAE 'sentence-transformers/all-MiniLM-L6-v2' vs given 'BAAI/bge-base-en-v1.5'; "
                            "pooling: SAE 'mean' vs given 'cls')")
    message = refused("fp64", rows=rows.astype(np.float64))
    assert "embeddings.npy holds a float64 array of shape (300, 384); expected float32" in message
    message = refused("no-dtype", encoder={k: v for k, v in recorded.items() if k != "dtype"})
    assert message.endswith(f"{folder / 'no-dtype' / 'encoder.json'} lacks dtype: it records the encoder's settings "
                            "and its backend and dtype, as `clsr encode` writes them")
    (_copy(work, folder / "no-ids") / "ids.txt").unlink()
    message = cli_error(["index", "--corpus", str(work / "corpus.jsonl"), "--index", str(folder / "i"),
                         "--embeddings", str(folder / "no-ids")])
    assert f"{folder / 'no-ids'} has no ids.txt: an embeddings folder holds embeddings.npy, ids.txt and " \
           "encoder.json" in message
    # Flags that contradict the given embeddings.
    assert refused("bf16", "--dtype", "bf16").endswith(
        f"--dtype bf16, but {folder / 'bf16' / 'encoder.json'} records dtype fp32: the index records the embeddings' "
        "own; give that or none")
    assert refused("bge-flag", "--encoder", "bge").endswith(
        "leave out --encoder, --pooling, --query-prefix, --max-length and --no-normalize")
    for flags, says in ((["--kind", "bm25"], "--embeddings with --kind bm25: a BM25 index has no embeddings"),
                        (["--ray"], "--embeddings with --ray: it encodes the corpus, whose embeddings are given"),
                        (["--adapt"], "--embeddings with --adapt: adapting encodes the corpus's own training vectors")):
        assert says in cli_error(["index", "--corpus", str(work / "corpus.jsonl"), "--index", str(folder / "i"),
                                  "--embeddings", str(work / "emb"), *flags])
    assert not (folder / "i").exists() and not any(folder.glob("*-index"))
