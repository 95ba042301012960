"""Adaptation to a new corpus (issue 10): lower FVU where the corpus shifted, stable ids where it did not,
provenance of the base SAE, and the index build's fit warning."""

import json
import logging

import numpy as np
import pytest

from clsr.index import check_sae_fit
from clsr.sae.adapt import AdaptConfig, adapt_sae, base_provenance, revive_latents
from clsr.sae.config import TrainConfig
from clsr.sae.model import TopKSae, sae_checksum
from clsr.sae.train import Trainer, TrainingData, passage_fvu

D, LATENTS, K = 24, 96, 4


def sparse_corpus(atoms: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Each vector: 3 random atoms with positive weights, plus a little noise."""
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(len(atoms), 3, replace=False) for _ in range(n)])
    x = (rng.uniform(0.5, 1.5, (n, 3, 1)) * atoms[picks]).sum(1) + 0.01 * rng.standard_normal((n, D))
    return x.astype(np.float32)


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    atoms = rng.standard_normal((n, D))
    return atoms / np.linalg.norm(atoms, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small SAE fitted on a corpus made of 48 atoms; saved, as a shipped SAE would be."""
    rng = np.random.default_rng(0)
    atoms = unit_rows(rng, 48)
    corpus = sparse_corpus(atoms, 4000, seed=1)
    path = tmp_path_factory.mktemp("base")
    config = TrainConfig(n_latents=LATENTS, k=K, batch_size=256, epochs=12, lr=3e-3, warmup_steps=10, dead_after=5000)
    sae = Trainer(TrainingData(corpus, documents=corpus), config, path).fit(progress=False)
    return sae, path, atoms


def test_adaptation_lowers_fvu_on_a_shifted_corpus(base, tmp_path):
    sae, path, atoms = base
    shifted_atoms = unit_rows(np.random.default_rng(7), 48)  # a corpus about other things
    shifted = sparse_corpus(shifted_atoms, 3000, seed=2)
    adapted, report = adapt_sae(sae, TrainingData(shifted, documents=shifted), tmp_path,
                                AdaptConfig(steps=300, lr=3e-3, batch_size=256), progress=False)
    assert report.fvu_before == pytest.approx(passage_fvu(sae, shifted), abs=1e-6)
    assert report.fvu_after == pytest.approx(passage_fvu(adapted, shifted), abs=1e-6)
    assert report.fvu_after < 0.6 * report.fvu_before
    # Saved like any SAE, and the base is untouched.
    assert TopKSae.load_from_disk(tmp_path).state_dict()["W_dec"].allclose(adapted.W_dec.detach())
    assert not (tmp_path / "checkpoint").exists()


def test_adaptation_keeps_concept_ids_on_an_unshifted_corpus(base, tmp_path):
    sae, path, atoms = base
    same = sparse_corpus(atoms, 3000, seed=3)  # new passages, same distribution
    _, report = adapt_sae(sae, TrainingData(same, documents=same), tmp_path,
                          AdaptConfig(steps=200, lr=1e-3, batch_size=256), progress=False)
    assert report.compared == LATENTS - report.revived
    assert report.kept_share >= 0.9
    assert report.fvu_after <= report.fvu_before * 1.05


def test_revival_points_dead_latents_at_residuals(base):
    sae, _, atoms = base
    model = TopKSae(sae.config)
    model.load_state_dict(sae.state_dict())
    data = sparse_corpus(atoms, 1000, seed=4)
    revive_latents(model, np.array([0, 5]), data)
    w = model.W_dec.detach().numpy()
    assert np.allclose(np.linalg.norm(w[[0, 5]], axis=1), 1, atol=1e-5)
    assert not np.allclose(w[0], sae.W_dec.detach().numpy()[0])
    assert np.allclose(w[1], sae.W_dec.detach().numpy()[1])  # others untouched


def test_adapted_config_records_its_base(base, tmp_path):
    sae, path, atoms = base
    corpus = sparse_corpus(atoms, 600, seed=5)
    provenance = {**base_provenance(path, "my-corpus"), "data": {"datasets": {"my-corpus": {"passages": 600}}}}
    adapt_sae(sae, TrainingData(corpus, documents=corpus), tmp_path / "adapted", AdaptConfig(steps=5, batch_size=256),
              provenance=provenance, progress=False)
    training = json.loads((tmp_path / "adapted" / "config.json").read_text())["training"]
    assert training["adaptation"]["base_sae"]["sha256"] == sae_checksum(path)
    assert training["adaptation"]["corpus"] == "my-corpus"
    assert training["adaptation"]["report"]["revived"] >= 0
    assert training["data"] == {"datasets": {"my-corpus": {"passages": 600}}}
    assert training["max_steps"] == 5


def test_fit_warning_fires_on_a_shifted_corpus_only(base, caplog):
    sae, _, atoms = base
    own = sparse_corpus(atoms, 1000, seed=1)
    shifted = sparse_corpus(unit_rows(np.random.default_rng(9), 48), 1000, seed=6)
    with caplog.at_level(logging.WARNING, logger="clsr.index"):
        quiet = check_sae_fit(sae, own)
    assert not quiet["poor_fit"] and not caplog.records
    assert quiet["reference_fvu"] == sae.config.training.reference_fvu
    with caplog.at_level(logging.WARNING, logger="clsr.index"):
        loud = check_sae_fit(sae, shifted)
    assert loud["poor_fit"] and loud["fvu"] > 1.5 * loud["reference_fvu"]
    message = caplog.records[-1].getMessage()
    assert f"{loud['fvu']:.3f}" in message and f"{loud['reference_fvu']:.3f}" in message and "adapt" in message


@pytest.mark.slow
def test_index_adapt_keeps_the_adapted_sae_in_the_index(tmp_path, scifact_slice, capsys):
    """`clsr index --adapt`: one command adapts the bundled SAE, indexes with it and keeps it in sae/."""
    from clsr.cli import main as clsr
    from clsr.index import read_manifest
    from clsr.sae.model import default_sae_path
    from clsr.search import ClsrSearcher

    corpus = tmp_path / "corpus.jsonl"
    docs = scifact_slice.documents[:40]
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in docs))
    clsr(["index", "--corpus", str(corpus), "--index", str(tmp_path / "index"), "--adapt", "--adapt-steps", "3",
          "--doc-k", "64", "--dtype", "fp32"])
    out = capsys.readouterr().out
    assert "adapted the SAE" in out and "built concepts index of 40 documents" in out
    assert "described" in out and (tmp_path / "index" / "concepts.jsonl").exists()  # --adapt describes too
    (tmp_path / "index").rename(tmp_path / "moved")  # the index carries its SAE wherever it goes
    manifest = read_manifest(tmp_path / "moved")
    assert manifest.sae.path == "sae" and manifest.sae.sha256 == sae_checksum(tmp_path / "moved" / "sae")
    assert manifest.sae.adapted_from["sha256"] == sae_checksum(default_sae_path())
    adapted = TopKSae.load_from_disk(tmp_path / "moved" / "sae")
    assert manifest.sae_fit.reference_fvu == adapted.config.training.reference_fvu
    assert not list(tmp_path.glob(".*adapting-*")) and not list(tmp_path.glob(".*building-*"))
    hits = ClsrSearcher(tmp_path / "moved", dtype="fp32").search(docs[3].text, 3)
    assert hits[0].docid == docs[3].id
