"""Inputs from the field, third round: field cases 28, 29, 30 and 32 and other variants of each kind.

Every test writes its own inputs; the comments name the field cases they stand for.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from clsr.cli import main as clsr
from clsr.errors import ClsrError
from clsr.sae.model import default_sae_path

PASSAGES = {
    "d1": ("Wind power", "Wind turbines convert moving air into electricity."),
    "d2": ("Solar power", "Solar panels convert sunlight into electricity."),
    "d3": ("Dams", "Hydroelectric dams store water behind concrete walls."),
    "d4": ("Storage", "Batteries store electricity for use at night."),
}
RECORDS = [{"_id": i, "title": t, "text": x} for i, (t, x) in PASSAGES.items()]
CORPUS = "".join(json.dumps(record) + "\n" for record in RECORDS)


def _write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def concept_index(tmp_path_factory):
    directory = tmp_path_factory.mktemp("field3-concepts")
    clsr(["index", "--corpus", str(_write(directory / "corpus.jsonl", CORPUS)), "--index", str(directory / "index"),
          "--dtype", "fp32", "--no-describe"])
    return directory / "index"


# -- 28: HEAD wherever GET ------------------------------------------------------------------------------------

HEAD_PATHS = ["/", "/api/info", "/api/search?q=solar%20panels&k=1", "/api/documents/d2", "/static/explorer.js",
              "/openapi.json", "/api/compare?q=solar"]


def test_head_is_answered_wherever_get_is_with_the_same_headers_and_no_body(concept_index):
    from fastapi.testclient import TestClient

    from clsr.interpret.explorer import Explorer
    from clsr.interpret.serve import create_app

    app = create_app(Explorer(concept_index, dtype="fp32"))
    with TestClient(app, base_url="http://127.0.0.1:8080") as client:
        for path in HEAD_PATHS:
            got, head = client.get(path), client.head(path)
            assert got.status_code == head.status_code == 200, (path, got.status_code, head.status_code)
            assert got.content and head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
            assert int(head.headers["content-length"]) > 0 and got.headers["content-length"] == str(len(got.content))
            if "search" not in path:  # a search's answer holds its timing, so its length may differ by a digit
                assert head.headers["content-length"] == got.headers["content-length"], path
        # A missing passage or file: the same 404 as GET, still without a body.
        for path in ("/api/documents/no-such-doc", "/static/no-such-file.js"):
            assert client.get(path).status_code == client.head(path).status_code == 404
            assert client.head(path).content == b""
        # A method not served: 405, whose Allow now names HEAD beside GET.
        refused = client.request("OPTIONS", "/api/info")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        # HEAD is no way round the Host check: a foreign name still gets 421, and no passage text.
        foreign = client.head("/api/documents/d2", headers={"Host": "attacker.example"})
        assert foreign.status_code == 421 and foreign.content == b""
        assert client.get("/api/documents/d2", headers={"Host": "attacker.example"}).status_code == 421


# -- 32: a JSON document where JSON Lines is expected ----------------------------------------------------------

def test_a_corpus_given_as_one_json_array_is_named_as_such(tmp_path, cli_error):
    arrays = {"corpus.json": json.dumps(RECORDS, indent=2), "corpus-one-line.json": json.dumps(RECORDS),
              "corpus.jsonl": json.dumps(RECORDS) + "\n", "spaced.json": "\n\n  [\n" + json.dumps(RECORDS)[1:]}
    for name, text in arrays.items():
        corpus = _write(tmp_path / name, text)
        message = cli_error(["index", "--kind", "bm25", "--corpus", str(corpus), "--index", str(tmp_path / "i")])
        line = 3 if name == "spaced.json" else 1  # the first line that is not blank
        assert f"{corpus}:{line}: the file is one JSON array ([...])" in message, message
        assert "not JSON Lines" in message and "one JSON object a line" in message
        assert "jq -c '.[]'" in message and "malformed" not in message
        assert not (tmp_path / "i").exists()
    # The same records as JSON Lines are read, whatever the file is called.
    lines = _write(tmp_path / "lines.json", CORPUS)
    clsr(["index", "--kind", "bm25", "--corpus", str(lines), "--index", str(tmp_path / "i")])
    assert (tmp_path / "i" / "clsr-index.json").is_file()


def test_topics_as_an_array_a_pretty_printed_object_or_pyserini_topics_are_each_named(tmp_path):
    from clsr.data import DataError, load_corpus, load_topics

    queries = [{"_id": "q1", "text": "solar panels"}, {"_id": "q2", "text": "dams"}]
    array = _write(tmp_path / "queries.jsonl", json.dumps(queries, indent=1))
    with pytest.raises(DataError, match=rf"^{re.escape(str(array))}:1: the file is one JSON array \(\[\.\.\.\]\), "
                                        "not JSON Lines"):
        load_topics(array)
    single = _write(tmp_path / "doc.json", json.dumps(RECORDS[0], indent=2))  # one object over five lines
    with pytest.raises(DataError, match=rf"^{re.escape(str(single))}:1: malformed JSON: the line ends inside a JSON "
                                        r"object \(an object spread over several lines, as pretty-printed JSON is"):
        load_corpus(single)
    # Pyserini's JSON topics, as `clsr encode-queries --topics-output t.json` writes them (and on one line).
    for name, indent in (("topics.json", 1), ("topics-one-line.json", None)):
        pyserini = _write(tmp_path / name, json.dumps({"q1": {"title": "solar panels"}}, indent=indent))
        with pytest.raises(DataError, match=rf"^{re.escape(str(pyserini))}: Pyserini's JSON topics .* does not read: "
                                            r"pass queries as JSON Lines .* or id<TAB>text"):
            load_topics(pyserini)
    # An array in the middle of a JSON Lines file is a bad line, named by its number, not a whole-file array.
    mixed = _write(tmp_path / "mixed.jsonl", json.dumps(queries[0]) + "\n" + json.dumps(queries) + "\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(mixed))}:2: expected a JSON object, got a JSON array; "
                                        "clsr reads JSON Lines"):
        load_topics(mixed)
    # BEIR queries.jsonl, corpus.jsonl and TSV topics read as before.
    beir = tmp_path / "beir"
    _write(beir / "queries.jsonl", "".join(json.dumps(q) + "\n" for q in queries))
    _write(beir / "corpus.jsonl", CORPUS)
    assert load_topics(beir / "queries.jsonl") == {"q1": "solar panels", "q2": "dams"}
    assert [d.id for d in load_corpus(beir)] == ["d1", "d2", "d3", "d4"]


def test_ray_workers_name_a_json_array_the_same_way():
    import numpy as np

    from clsr.data import DataError
    from clsr.encode.ray import _parse_lines

    with pytest.raises(DataError, match=r"corpus\.json \(line .*\): the file is one JSON array .* not JSON Lines"):
        _parse_lines({"text": np.array(["[", json.dumps(RECORDS[0]) + ","], dtype=object)}, path="corpus.json")
    parsed = _parse_lines({"text": np.array([json.dumps(r) for r in RECORDS], dtype=object)}, path="c.jsonl")
    assert list(parsed["id"]) == ["d1", "d2", "d3", "d4"] and parsed["text"][1].startswith("Solar power Solar")


# -- 29: a CSR model's max_active_dims sets the K it encodes with ---------------------------------------------

@pytest.fixture(scope="module")
def exported(concept_index, tmp_path_factory):
    """The concept index's SAE and encoder exported as a SparseEncoder folder (k = the doc K, 128)."""
    pytest.importorskip("sentence_transformers")
    output = tmp_path_factory.mktemp("field3-export") / "exported"
    clsr(["export", "sentence-transformers", "--index", str(concept_index), "--output", str(output)])
    return output


def _resaved(exported: Path, output: Path, max_active_dims: int) -> Path:
    """The case's gen.py: SparseEncoder(SRC, max_active_dims=N).save(DST)."""
    from sentence_transformers import SparseEncoder

    SparseEncoder(str(exported), device="cpu", max_active_dims=max_active_dims).save(str(output))
    assert json.loads((output / "config_sentence_transformers.json").read_text())["max_active_dims"] == max_active_dims
    return output


def _active(rows) -> list[set[int]]:
    return [set(np.flatnonzero(row)) for row in rows]


@pytest.mark.parametrize("max_active_dims", [16, 160])  # below the module's k (128), and above it
def test_a_csr_models_max_active_dims_is_the_k_of_its_index(tmp_path, exported, max_active_dims, caplog):
    from sentence_transformers import SparseEncoder

    from clsr.index.manifest import IndexManifest
    from clsr.search import ClsrSearcher

    model_dir = _resaved(exported, tmp_path / "model", max_active_dims)
    corpus = _write(tmp_path / "corpus.jsonl", CORPUS)
    with caplog.at_level("INFO", logger="clsr"):
        clsr(["index", "--sae", str(model_dir), "--corpus", str(corpus), "--index", str(tmp_path / "index"),
              "--no-tune-alpha", "--no-describe", "--encoder-backend", "torch", "--dtype", "fp32"])
    relation = "is below" if max_active_dims < 128 else "replaces"
    assert (f"max_active_dims {max_active_dims} {relation} the SparseAutoEncoder's k 128; sentence-transformers "
            f"encodes passages and queries with {max_active_dims} active dimensions") in caplog.text
    manifest = IndexManifest.read(tmp_path / "index")
    assert (manifest.doc_k, manifest.query.k, manifest.sae.k) == (max_active_dims,) * 3
    assert manifest.sae.source["k"] == 128 and manifest.sae.source["max_active_dims"] == max_active_dims

    model = SparseEncoder(str(model_dir), device="cpu")
    texts = [f"{title} {text}" for title, text in PASSAGES.values()]
    st_docs = model.encode_document(texts, convert_to_sparse_tensor=False).numpy()
    activations = np.load(tmp_path / "index" / "doc_codes" / "activations.npy").astype(np.float32)
    latents = np.load(tmp_path / "index" / "doc_codes" / "latents.npy")
    ours = np.zeros_like(st_docs)
    np.put_along_axis(ours, latents.astype(np.int64), activations, axis=1)
    assert [len(a) for a in _active(st_docs)] == [len(a) for a in _active(ours)]
    assert max(len(a) for a in _active(ours)) <= max_active_dims and len(_active(ours)[0]) > 8
    assert _active(st_docs) == _active(ours)
    np.testing.assert_allclose(ours, st_docs, rtol=2e-3, atol=1e-4)  # the index keeps float16 activations

    queries = ["solar panels and sunlight", "storing electricity at night"]
    st_queries = model.encode_query(queries, convert_to_sparse_tensor=False).numpy()
    encoder = ClsrSearcher(tmp_path / "index").concept_encoder
    values, indices = encoder.query_codes(encoder.dense.encode_queries(queries))
    assert _active(st_queries) == [{int(i) for i in row[v > 0]} for row, v in zip(indices, values)]
    assert max(len(a) for a in _active(st_queries)) <= max_active_dims and indices.shape[1] == max_active_dims


def test_a_doc_k_above_a_csr_models_max_active_dims_names_both_numbers(tmp_path, exported, cli_error):
    model_dir = _resaved(exported, tmp_path / "model", 16)
    corpus = _write(tmp_path / "corpus.jsonl", CORPUS)
    message = cli_error(["index", "--sae", str(model_dir), "--corpus", str(corpus), "--index", str(tmp_path / "i"),
                         "--doc-k", "64", "--no-tune-alpha", "--no-describe"])
    assert ("k=64: this SAE comes from a CSR model whose max_active_dims 16 sets the K sentence-transformers "
            "encodes with (its SparseAutoEncoder's k is 128); use 1..16") in message
    assert not (tmp_path / "i").exists()
    settings = model_dir / "config_sentence_transformers.json"
    for value, says in ((9000, "is above the 8192 dimensions of the SparseAutoEncoder"),
                        (0, "max_active_dims 0 is not a positive integer")):
        settings.write_text(json.dumps({**json.loads(settings.read_text()), "max_active_dims": value}))
        message = cli_error(["index", "--sae", str(model_dir), "--corpus", str(corpus), "--index",
                             str(tmp_path / "i"), "--no-tune-alpha", "--no-describe"])
        assert f"{settings}: " in message and says in message


# -- 30: never replace what the command did not write ---------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (symlinks not followed) -> its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.fixture
def workplace(tmp_path, monkeypatch, concept_index):
    """The case's working folder: a corpus, notes, a folder of the user's own and my-index/ (a concept index);
    the test runs inside it."""
    import shutil

    work = tmp_path / "work"
    _write(work / "corpus.jsonl", CORPUS)
    _write(work / "notes.txt", "my notes\n")
    _write(work / "papers" / "draft.md", "# draft\n")
    shutil.copytree(concept_index, work / "my-index")
    monkeypatch.chdir(work)
    return work


def test_export_refuses_the_working_folder_its_parents_its_sources_and_a_foreign_folder(workplace, cli_error):
    before = _snapshot(workplace.parent)
    (workplace / "here").symlink_to(workplace)  # a link to the working folder is the working folder
    refusals = {
        ".": "--output . is the working folder",
        "here": "--output here is the working folder",
        "..": f"--output .. is a parent of the working folder {workplace}",
        str(workplace.parent.parent): "is a parent of the working folder",
        "my-index": f"--output my-index is the index being exported ({workplace / 'my-index'})",
        "my-index/model": f"--output my-index/model lies inside the index being exported ({workplace / 'my-index'})",
        "papers": "--output papers is a folder that is not a clsr sentence-transformers export (clsr_export.json) and "
                  "is not empty (draft.md)",
        "notes.txt": "--output notes.txt is a file, not a folder",
    }
    for output, says in refusals.items():
        message = cli_error(["export", "sentence-transformers", "--index", "my-index", "--output", output,
                             "--overwrite"])
        assert says in message, (output, message)
    assert _snapshot(workplace.parent) == before  # not one file deleted or changed
    assert not (workplace / "my-index" / "model").exists()
    # An SAE given to export: its own folder is a source too.
    sae = workplace / "my-index" / "sae-copy"
    message = cli_error(["export", "sentence-transformers", "--sae", str(default_sae_path()),
                         "--output", str(default_sae_path()), "--overwrite"])
    assert f"is the SAE being exported ({default_sae_path().resolve()})" in message and not sae.exists()


def test_an_earlier_export_is_replaced_with_overwrite_but_never_with_files_it_did_not_write(workplace, cli_error):
    pytest.importorskip("sentence_transformers")
    before = _snapshot(workplace)
    clsr(["export", "sentence-transformers", "--index", "my-index", "--output", "model"])
    record = json.loads((workplace / "model" / "clsr_export.json").read_text())
    assert set(record["files"]) == set(os.listdir(workplace / "model")) and "modules.json" in record["files"]
    assert "pass --overwrite to replace it" in cli_error(["export", "sentence-transformers", "--index", "my-index",
                                                          "--output", "model"])
    first = (workplace / "model" / "clsr_export.json").stat().st_mtime_ns
    clsr(["export", "sentence-transformers", "--index", "my-index", "--output", "model", "--overwrite"])
    assert (workplace / "model" / "clsr_export.json").stat().st_mtime_ns != first  # replaced
    assert not list(workplace.glob(".model*"))  # no building folder or lock left beside it
    _write(workplace / "model" / "my-eval.txt", "results\n")
    message = cli_error(["export", "sentence-transformers", "--index", "my-index", "--output", "model", "--overwrite"])
    assert "--output model holds files clsr did not write there (my-eval.txt)" in message
    assert (workplace / "model" / "my-eval.txt").read_text() == "results\n"
    assert {name: data for name, data in _snapshot(workplace).items() if not name.startswith("model/")} == before


def test_index_overwrite_never_replaces_the_working_folder_a_source_or_a_folder_clsr_did_not_write(
        workplace, cli_error):
    from clsr.data import load_corpus
    from clsr.index import build_bm25_index

    before = _snapshot(workplace.parent)
    beir = workplace / "beir"
    _write(beir / "corpus.jsonl", CORPUS)
    refusals = {
        ".": "--index . is the working folder",
        "..": "--index .. is a parent of the working folder",
        "papers": "--index papers is a folder that is not a clsr index and is not empty (draft.md)",
        "corpus.jsonl": f"--index corpus.jsonl is the corpus ({workplace / 'corpus.jsonl'})",
        "notes.txt": "--index notes.txt is a file, not a folder",
    }
    for target, says in refusals.items():
        message = cli_error(["index", "--kind", "bm25", "--corpus", "corpus.jsonl", "--index", target, "--overwrite"])
        assert says in message, (target, message)
    for target, says in (("beir", "is the corpus"), (".", "is the working folder")):
        message = cli_error(["index", "--kind", "bm25", "--corpus", "beir", "--index", target, "--overwrite"])
        assert says in message
    # An index may sit inside a corpus folder (it replaces nothing of the corpus's), and is rebuilt there.
    clsr(["index", "--kind", "bm25", "--corpus", "beir", "--index", "beir/index"])
    clsr(["index", "--kind", "bm25", "--corpus", "beir", "--index", "beir/index", "--overwrite"])
    assert (beir / "corpus.jsonl").read_text() == CORPUS and (beir / "index" / "clsr-index.json").exists()
    # An earlier index is rebuilt; one holding the user's files is not (what `clsr demo`'s rebuilds meet too).
    clsr(["index", "--kind", "bm25", "--corpus", "corpus.jsonl", "--index", "bm25"])
    clsr(["index", "--kind", "bm25", "--corpus", "corpus.jsonl", "--index", "bm25", "--overwrite"])
    _write(workplace / "bm25" / "queries.tsv", "q1\tsolar\n")
    message = cli_error(["index", "--kind", "bm25", "--corpus", "corpus.jsonl", "--index", "bm25", "--overwrite"])
    assert "--index bm25 holds files clsr did not write there (queries.tsv)" in message
    with pytest.raises(ClsrError, match="is a folder that is not a clsr index and is not empty"):
        build_bm25_index(load_corpus("corpus.jsonl"), workplace / "papers", overwrite=True)
    assert (workplace / "bm25" / "queries.tsv").exists() and (workplace / "bm25" / "clsr-index.json").exists()
    after = _snapshot(workplace.parent)
    assert {name: after[name] for name in before} == before


def test_encode_train_and_adapt_refuse_the_working_folder_sources_and_foreign_folders(workplace, cli_error):
    import shutil

    from clsr.encode.ray import encode_with_ray

    before = _snapshot(workplace.parent)
    sae = workplace / "my-sae"
    shutil.copytree(default_sae_path(), sae, ignore=shutil.ignore_patterns("concepts.jsonl"))
    for argv, says in (
            (["encode", "--corpus", "corpus.jsonl", "--output", "."], "--output . is the working folder"),
            (["encode", "--corpus", "corpus.jsonl", "--output", "papers"], "--output papers is a folder that is not "
                                                                           "a clsr encode folder"),
            (["encode", "--corpus", "corpus.jsonl", "--output", "corpus.jsonl"], "--output corpus.jsonl is the corpus"),
            (["adapt-sae", "--corpus", "corpus.jsonl", "--sae", "my-sae", "--output", "my-sae"],
             f"--output my-sae is the SAE adapted ({sae})"),
            (["adapt-sae", "--corpus", "corpus.jsonl", "--sae", "my-sae", "--output", "my-sae/adapted"],
             "--output my-sae/adapted lies inside the SAE adapted"),
            (["adapt-sae", "--corpus", "corpus.jsonl", "--output", "my-index"], "--output my-index is a folder that is "
                                                                               "not an SAE folder"),
            (["train-sae", "--dataset", ".", "--output", "."], "--output . is the working folder"),
            (["train-sae", "--dataset", "corpus.jsonl", "--output", "papers"],
             "--output papers is a folder that is not an SAE folder")):
        message = cli_error(argv)
        assert says in message, (argv, message)
    # `--shards` is replaced whole: never a folder holding the corpus, nor one of the user's.
    with pytest.raises(ClsrError, match=r"--shards \. is the working folder"):
        encode_with_ray("corpus.jsonl", {}, ".")
    with pytest.raises(ClsrError, match="--shards papers is a folder that is not a folder of Ray-encoded shards"):
        encode_with_ray("corpus.jsonl", {}, "papers")
    assert _snapshot(workplace.parent) == {**before, **{f"work/my-sae/{k}": v for k, v in _snapshot(sae).items()}}
    # An earlier `clsr encode` folder is written again, and the user's files in it are kept.
    clsr(["encode", "--corpus", "corpus.jsonl", "--output", "vectors", "--dtype", "fp32"])
    _write(workplace / "vectors" / "notes.txt", "kept\n")
    clsr(["encode", "--corpus", "corpus.jsonl", "--output", "vectors", "--dtype", "fp32"])
    assert np.load(workplace / "vectors" / "embeddings.npy").shape == (4, 384)
    assert (workplace / "vectors" / "notes.txt").read_text() == "kept\n"


def test_file_outputs_replace_files_never_a_folder_or_an_input(workplace, cli_error):
    before = _snapshot(workplace.parent)
    _write(workplace / "queries.tsv", "q1\tsolar panels\n")
    _write(workplace / "a.trec", "q1 Q0 d2 1 2.0 a\n")
    _write(workplace / "b.trec", "q1 Q0 d1 1 2.0 b\n")
    for argv, says in (
            (["search", "--index", "my-index", "--topics", "queries.tsv", "--output", "queries.tsv"],
             f"--output queries.tsv is the topics ({workplace / 'queries.tsv'})"),
            (["search", "--index", "my-index", "--topics", "queries.tsv", "--output", "papers"],
             "--output papers is a folder; a file is written there, never a folder replaced"),
            (["fuse", "--runs", "a.trec", "b.trec", "--output", "b.trec"], "--output b.trec is the run b.trec"),
            (["encode-queries", "--index", "my-index", "--topics", "queries.tsv", "--output", "q.jsonl",
              "--topics-output", "queries.tsv"], "--topics-output queries.tsv is the topics"),
            (["describe", "--index", "my-index", "--corpus", "corpus.jsonl", "--output", "corpus.jsonl"],
             "--output corpus.jsonl is the corpus"),
            (["describe", "--index", "my-index", "--output", "."], "--output . is the working folder")):
        message = cli_error(argv)
        assert says in message, (argv, message)
    assert {name: data for name, data in _snapshot(workplace.parent).items() if name in before} == before
    clsr(["fuse", "--runs", "a.trec", "b.trec", "--output", "fused.trec"])
    clsr(["fuse", "--runs", "a.trec", "b.trec", "--output", "fused.trec"])  # a file output is replaced
    assert (workplace / "fused.trec").read_text().startswith("q1 Q0 ")


def test_check_replaceable_reads_every_kind_of_output(tmp_path, monkeypatch):
    from clsr.index.atomic import FILE, INDEX, SAE, SHARDS, UnsafeOutputError, check_replaceable

    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "idx" / "clsr-index.json", "{}")
    for name in ("_0.fdt", "_0_Lucene99_0.doc", "segments_1", "write.lock", "concepts.jsonl", "engines/x"):
        _write(tmp_path / "idx" / name, "")
    assert check_replaceable("idx", INDEX) == tmp_path / "idx"
    _write(tmp_path / "shards" / "shard-00000" / "ids.txt", "d1")  # an interrupted encoding's shards
    assert check_replaceable("shards", SHARDS) == tmp_path / "shards"
    _write(tmp_path / "sae" / "config.json", "{}")  # a config.json alone is no SAE
    with pytest.raises(UnsafeOutputError, match="is a folder that is not an SAE folder"):
        check_replaceable("sae", SAE, replaces=False)
    _write(tmp_path / "sae" / "sae.safetensors", "")
    _write(tmp_path / "sae" / "notes.txt", "")
    assert check_replaceable("sae", SAE, replaces=False) == tmp_path / "sae"  # written into: notes.txt stays
    with pytest.raises(UnsafeOutputError, match=r"holds files clsr did not write there \(notes\.txt\)"):
        check_replaceable("sae", SAE)
    corpus = _write(tmp_path / "data" / "corpus.jsonl", CORPUS)
    with pytest.raises(UnsafeOutputError, match=rf"--output data contains the corpus \({re.escape(str(corpus))}\)"):
        check_replaceable("data", INDEX, {"the corpus": corpus})
    assert check_replaceable("data/run.trec", FILE, {"the corpus": corpus}) == tmp_path / "data" / "run.trec"
    assert check_replaceable("new/folder", INDEX, {"the corpus": None, "a dataset": "beir/scifact"})


# -- 11 again (issue 30): describing, on by default, cuts a passage as the encoder does -----------------------

def test_a_huge_passage_costs_describing_what_a_normal_one_does(tmp_path):
    """Field case 11 with `clsr index`'s defaults (describing on): one 21 MB passage beside normal ones. Describing
    read the whole text and peaked at 12.7 GB against 1.0 GB without it; it must cost about what the corpus without
    the huge passage costs, and describe every concept the corpus uses."""
    import resource
    import subprocess
    import sys

    from clsr.data import load_corpus

    normal = [{"_id": d.id, "title": "", "text": d.text} for d in load_corpus("scifact")[:3]]
    rng = np.random.default_rng(0)
    words = np.array("river valley harvest engine copper lantern orbit meadow signal harbor quartz".split())
    huge = {"_id": "big", "title": "Scraped page", "text": " ".join(rng.choice(words, 3_200_000))}
    peaks = {}
    for name, documents in (("small", normal), ("huge", [huge, *normal])):
        corpus = _write(tmp_path / f"{name}.jsonl", "".join(json.dumps(d) + "\n" for d in documents))
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result = subprocess.run([sys.executable, "-m", "clsr.index", "--corpus", str(corpus), "--index",
                                 str(tmp_path / f"{name}-index"), "--no-tune-alpha", "--encoder-backend", "torch",
                                 "--dtype", "fp32"], capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        # ru_maxrss of children is the largest any child reached: the second build is measured alone only if it
        # peaks higher than the first, which is what the bound below is about.
        peaks[name] = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
        catalogue = [json.loads(line) for line in (tmp_path / f"{name}-index" / "concepts.jsonl").open()]
        used = [entry for entry in catalogue if entry["df"] > 0]
        assert used and all(entry["description"] for entry in used)
        assert f"described {len(used)} of the {len(used)} concepts the corpus uses" in result.stdout
    assert "1 of 4 texts are longer than 25600 characters and were cut" in result.stderr
    assert peaks["huge"] < 1.5 * peaks["small"], peaks  # kB; the 21 MB text itself is read once
