"""Bad input as a new user would try it (issue 12): one clear line, nothing lost, nothing half-built."""

import fcntl
import json
import logging
from pathlib import Path

import pytest

from clsr.cli import main as clsr
from clsr.data import iter_corpus
from clsr.index import InvalidIndexError, build_bm25_index

CORPUS = [{"_id": f"d{i}", "text": text} for i, text in enumerate(
    ["wind turbines make electricity", "solar panels make electricity", "dams hold water"])]


def _corpus(path, records=CORPUS):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path




def test_an_sae_folder_without_an_sae_says_what_one_holds(tmp_path, cli_error):
    (tmp_path / "not-an-sae").mkdir()
    message = cli_error(["index", "--corpus", str(_corpus(tmp_path / "c.jsonl")), "--index", str(tmp_path / "i"),
                      "--sae", str(tmp_path / "not-an-sae")])
    # `--sae` also takes a sentence-transformers CSR folder (issue 22), so the message names both kinds.
    assert "is neither a clsr SAE (config.json and sae.safetensors) nor a sentence-transformers CSR model" in message
    assert message.endswith("it is empty")


def test_steering_a_concept_outside_the_dictionary_names_the_valid_range(slice_concept_index, tmp_path,
                                                                         cli_error):
    topics = tmp_path / "q.tsv"
    topics.write_text("1\tcells\n")
    message = cli_error(["search", "--index", str(slice_concept_index), "--topics", str(topics),
                      "--output", str(tmp_path / "r.trec"), "--boost", "c99999=2"])
    assert message.endswith("steered concept c99999 does not exist: this SAE's concepts are c0..c8191")


def test_any_unexpected_failure_is_one_line_unless_debug(tmp_path, monkeypatch, cli_error):
    from clsr.evaluate import command as evaluate_module  # the name `clsr evaluate` calls

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(evaluate_module, "evaluate", broken)
    run, qrels = tmp_path / "run.trec", tmp_path / "qrels.txt"
    run.write_text("q1 Q0 d1 1 1.0 t\n")
    qrels.write_text("q1 0 d1 1\n")
    assert cli_error(["evaluate", "--run", str(run), "--qrels", str(qrels)]).endswith(
        "RuntimeError: disk on fire (run again with --debug for the traceback)")
    with pytest.raises(RuntimeError, match="disk on fire"):
        clsr(["evaluate", "--run", str(run), "--qrels", str(qrels), "--debug"])


def test_a_killed_builds_leftovers_are_cleaned_by_the_next_build_which_says_so(tmp_path, caplog):
    leftover = tmp_path / ".index.building-x1y2"
    leftover.mkdir()
    (leftover / "half-written").write_text("...")
    with caplog.at_level(logging.WARNING):
        build_bm25_index(iter_corpus(_corpus(tmp_path / "c.jsonl")), tmp_path / "index")
    assert not leftover.exists() and (tmp_path / "index" / "clsr-index.json").exists()
    assert "removed 1 unfinished build folder(s)" in caplog.text and ".index.building-x1y2" in caplog.text


def test_an_adaptation_killed_mid_way_is_cleaned_by_the_next_build_but_a_running_one_is_not(tmp_path, caplog):
    """`clsr index --adapt` keeps its SAE in .NAME.adapting-PID-XXXX beside the index: a dead PID's folder is a
    killed run's and goes, with a warning; a live one (this process: an adaptation under way) stays."""
    import os
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".index.adapting-{finished.stdout.strip()}-ab12"
    running = tmp_path / f".index.adapting-{os.getpid()}-cd34"
    for folder in (dead, running):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        build_bm25_index(iter_corpus(_corpus(tmp_path / "c.jsonl")), tmp_path / "index")
    assert not dead.exists() and running.exists()
    assert "removed 1 unfinished build folder(s)" in caplog.text and dead.name in caplog.text


def test_an_interrupted_adaptation_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """Ctrl-C during `clsr index --adapt`: exit 130 and nothing hidden left beside the index."""
    from clsr.sae import adapt as sae_adaptation

    def interrupted(base_path, corpus, encoder, output_dir, config):
        (Path(output_dir) / "sae.safetensors").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(sae_adaptation, "adapt_to_corpus", interrupted)
    with pytest.raises(SystemExit) as exit_status:
        clsr(["index", "--corpus", str(_corpus(tmp_path / "c.jsonl")), "--index", str(tmp_path / "out" / "index"),
              "--adapt", "--dtype", "fp32"])
    assert exit_status.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []


def test_a_second_build_of_the_same_target_is_refused_while_the_first_runs(tmp_path):
    with open(tmp_path / ".index.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("pid 4242\n")
        lock.flush()
        with pytest.raises(InvalidIndexError, match=r"another build of .*index is running \(pid 4242\)"):
            build_bm25_index(iter_corpus(_corpus(tmp_path / "c.jsonl")), tmp_path / "index")
    assert not (tmp_path / "index").exists()
    build_bm25_index(iter_corpus(_corpus(tmp_path / "c.jsonl")), tmp_path / "index")  # free again


def test_a_search_during_an_overwrite_finishes_on_the_old_index(tmp_path):
    from clsr.search import Bm25Searcher

    build_bm25_index(iter_corpus(_corpus(tmp_path / "c.jsonl")), tmp_path / "index")
    old = Bm25Searcher(tmp_path / "index")
    assert [h.docid for h in old.search("solar", 3)] == ["d1"]
    replacement = [{"_id": "n1", "text": "solar flares"}, {"_id": "n2", "text": "solar wind"}]
    build_bm25_index(iter_corpus(_corpus(tmp_path / "c2.jsonl", replacement)), tmp_path / "index", overwrite=True)
    assert [h.docid for h in old.search("solar", 3)] == ["d1"]  # its files stay readable until it closes
    assert sorted(h.docid for h in Bm25Searcher(tmp_path / "index").search("solar", 3)) == ["n1", "n2"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".index")]  # no lock, no leftovers
