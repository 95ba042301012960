"""config.json of an SAE: one typed record (clsr.sae.config), read and written in one place; files written by
clsr 0.1 read, and write back, unchanged."""

import json

import pytest

from clsr.sae.config import CONFIG_NAME, SaeConfig, SaeConfigError, TrainConfig
from clsr.sae.model import default_sae_path

ADAPTED_BY_0_1 = {  # the training record clsr 0.1's adapt-sae wrote (values shortened)
    "n_latents": 8192, "k": 128, "batch_size": 512, "epochs": 1, "lr": 0.0003, "warmup_steps": 20, "seed": 0,
    "auxk_alpha": 0.03125, "dead_after": 200000, "kl_weight": 0.1, "kl_sparse_weight": 0.3, "tau": 0.05,
    "tau_sparse": 0.05, "kl_queries": 64, "multi_k": [64], "max_steps": 1500, "device": "cpu",
    "data": {"datasets": {"/data/scifact": {"passages": 5183}}},
    "final_epoch": {"fvu": 0.12}, "reference_fvu": 0.118,
    "adaptation": {"base_sae": {"name": "minilm-l6-v2-general-topk128-8192", "path": "/x/models/minilm",
                                "sha256": "ab" * 32, "data": {"general-english": {"passages": 46127}}},
                   "corpus": "/data/scifact", "config": {"steps": 1500}, "report": {"revived": 12}},
}


def test_the_bundled_config_reads_typed_and_writes_back_byte_for_byte(tmp_path):
    folder = default_sae_path()
    config = SaeConfig.read(folder)
    assert (config.d_in, config.n_latents, config.k) == (384, 8192, 128)
    assert config.training.settings == TrainConfig(
        n_latents=8192, k=128, batch_size=512, epochs=12, lr=0.001, warmup_steps=100, seed=0, auxk_alpha=1 / 32,
        dead_after=200_000, kl_weight=0.1, kl_sparse_weight=0.3, tau=0.05, tau_sparse=0.05, kl_queries=64,
        multi_k=(64,), max_steps=None, device="cuda")
    assert config.training.reference_fvu == 0.087462 and config.training.final_epoch["fvu"] == 0.085809
    assert config.training.datasets == ["general-english"] and config.training.adaptation is None
    config.write(tmp_path)
    assert (tmp_path / CONFIG_NAME).read_text() == (folder / CONFIG_NAME).read_text()


def test_an_adapted_config_of_clsr_0_1_reads_its_provenance(tmp_path):
    written = {"d_in": 384, "n_latents": 8192, "k": 128, "encoder": None, "training": ADAPTED_BY_0_1}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(written, indent=2) + "\n")
    config = SaeConfig.read(tmp_path)
    adaptation = config.training.adaptation
    assert adaptation.base_sae.sha256 == "ab" * 32 and adaptation.corpus == "/data/scifact"
    assert adaptation.report == {"revived": 12} and config.training.settings.multi_k == (64,)
    assert config.training.seen_collections() == ["/data/scifact", "general-english"]
    assert config.training.relation("scifact") == "adapted"
    assert config.training.relation("nfcorpus") == "zero-shot"
    assert config.training.relation("general-english") == "transductive"
    assert config.to_dict() == written


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(colour="red"), "unknown field 'colour'"),
    (lambda c: c.pop("k"), "missing field 'k'"),
    (lambda c: c["training"].update(learning_rate=1.0), "unknown field training.learning_rate"),
    (lambda c: c["training"].update(multi_k=[999]), "malformed training record"),
    (lambda c: c.update(k=0), "k must be in 1..n_latents"),
])
def test_a_malformed_config_is_one_line_naming_the_file(tmp_path, change, message):
    written = {"d_in": 384, "n_latents": 8192, "k": 128, "encoder": None, "training": dict(ADAPTED_BY_0_1)}
    change(written)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(written))
    with pytest.raises(SaeConfigError) as error:
        SaeConfig.read(tmp_path)
    assert str(error.value).startswith(str(tmp_path / CONFIG_NAME)) and message in str(error.value)
    assert "\n" not in str(error.value)
