"""benchmarks/csr_peer.py (not run by make test) on a tiny slice: both trainers train, convert and are measured."""

import json
import sys
from pathlib import Path

import pytest

from clsr.data import load_corpus, load_qrels, load_topics

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sentence_transformers")


def _tiny_collection(folder: Path, passages: int = 30) -> Path:
    """A BEIR folder: SciFact test queries judged on its first passages, and those passages."""
    documents = load_corpus("scifact")[:passages]
    kept = {d.id for d in documents}
    qrels = {q: {d: r for d, r in judged.items() if d in kept} for q, judged in load_qrels("scifact", "test").items()}
    qrels = {q: judged for q, judged in qrels.items() if judged}
    topics = load_topics("scifact", "test")
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in documents))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": topics[q]}) + "\n" for q in qrels))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, judged in qrels.items() for d, r in judged.items()))
    return folder


@pytest.mark.slow
def test_csr_peer_runs_on_a_tiny_slice(tmp_path, shared_data, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("csr_peer", None)
    import csr_peer

    collection = _tiny_collection(tmp_path / "tiny", passages=15)
    out = tmp_path / "csr-peer.json"
    csr_peer.main(["--dataset", str(collection), "--passages", "12", "--queries", "8", "--steps", "3",
                   "--adapt-steps", "2", "--batch-size", "64", "--n-latents", "512", "--k", "128",
                   "--work", str(tmp_path / "work"), "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["collections"][0]["rows"]
    assert set(rows) == {"clsr/zero-shot", "clsr/adapted", "csr/zero-shot", "csr/adapted"}
    for row in rows.values():
        assert 0 <= row["fvu_docs"] and 0 <= row["sparse_k128_x_dense"] and "clsr_bm25_rrf_x_dense" in row
    # 3 steps may take under 0.05 s, which the report rounds to 0.0
    assert result["scale"]["steps"] == pytest.approx(3 / 9800) and result["training_s"]["csr"] >= 0
    assert set(result["csr_last_losses"]) >= {"reconstruction_loss_k", "base_loss"}
    table = out.with_suffix(".md").read_text()
    assert "Scaled down for a CPU, equally for both" in table and "| csr/adapted |" in table
