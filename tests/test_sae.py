import json

import numpy as np
import pytest
import torch

from clsr.sae.config import SaeConfig, TrainConfig
from clsr.sae.model import SaeMismatchError, TopKSae, sae_checksum
from clsr.sae.train import Trainer, TrainingData

ENCODER = {"model": "m", "pooling": "mean", "normalize": True, "query_prefix": "", "max_length": 256}


def make_sae(d=16, n_latents=64, k=8, seed=0) -> TopKSae:
    torch.manual_seed(seed)
    return TopKSae(SaeConfig(d, n_latents, k, encoder=ENCODER))


def test_forward_shapes_sparsity_and_non_negativity():
    sae = make_sae()
    x = torch.randn(32, 16)
    out = sae(x)
    assert out.reconstruction.shape == (32, 16)
    assert out.latent_acts.shape == out.latent_indices.shape == (32, 8)
    assert (out.latent_acts >= 0).all()
    assert all(len(set(row.tolist())) == 8 for row in out.latent_indices)
    pre = sae.pre_acts(x)
    kth = pre.topk(8, dim=1).values[:, -1:]
    assert torch.equal(pre.gather(1, out.latent_indices) >= kth, torch.ones(32, 8, dtype=torch.bool))
    dense = torch.zeros(32, 64).scatter(1, out.latent_indices, out.latent_acts)
    assert ((dense != 0).sum(1) <= 8).all()
    assert torch.allclose(out.reconstruction, dense @ sae.W_dec + sae.b_dec, atol=1e-6)
    residual = (x - out.reconstruction).detach()
    assert out.fvu.item() == pytest.approx(float((residual ** 2).sum() / ((x - x.mean(0)) ** 2).sum()), rel=1e-5)


def test_decoder_rows_start_tied_and_at_unit_norm():
    sae = make_sae()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    cosine = torch.nn.functional.cosine_similarity(sae.W_dec, sae.encoder.weight, dim=1)
    assert torch.allclose(cosine, torch.ones(64), atol=1e-6)


def test_smaller_k_at_inference_is_a_prefix_and_larger_k_is_refused():
    sae = make_sae()
    x = np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32)
    values8, indices8 = sae.encode_numpy(x)
    values4, indices4 = sae.encode_numpy(x, k=4, batch_size=3)
    np.testing.assert_array_equal(indices4, indices8[:, :4])
    np.testing.assert_allclose(values4, values8[:, :4], atol=1e-6)  # other batch size, other rounding
    with pytest.raises(ValueError, match="trained with k=8"):
        sae.encode_numpy(x, k=9)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    sae = make_sae()
    sae.save_to_disk(tmp_path / "sae")
    loaded = TopKSae.load_from_disk(tmp_path / "sae")
    assert loaded.config == sae.config
    for name, tensor in sae.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = torch.randn(5, 16)
    assert torch.equal(sae(x).reconstruction, loaded(x).reconstruction)
    assert json.loads((tmp_path / "sae" / "config.json").read_text())["encoder"] == ENCODER
    assert len(sae_checksum(tmp_path / "sae")) == 64


def test_fp16_save_is_half_the_size_and_close(tmp_path):
    sae = make_sae()
    sae.save_to_disk(tmp_path / "fp32")
    sae.save_to_disk(tmp_path / "fp16", dtype=torch.float16)
    size = lambda p: (p / "sae.safetensors").stat().st_size  # noqa: E731
    assert size(tmp_path / "fp16") < 0.55 * size(tmp_path / "fp32")
    loaded = TopKSae.load_from_disk(tmp_path / "fp16")
    assert torch.allclose(loaded.W_dec, sae.W_dec, atol=1e-3)


def test_mismatches_name_both_sides(tmp_path):
    sae = make_sae()
    with pytest.raises(SaeMismatchError, match="SAE takes 16-d vectors .* the embeddings are 384-d"):
        sae.encode_numpy(np.zeros((2, 384), np.float32))
    with pytest.raises(SaeMismatchError, match="pooling: SAE 'mean' vs given 'cls'"):
        sae.check_encoder({**ENCODER, "pooling": "cls"})
    sae.check_encoder(dict(ENCODER))
    sae.save_to_disk(tmp_path / "sae")
    config = json.loads((tmp_path / "sae" / "config.json").read_text())
    (tmp_path / "sae" / "config.json").write_text(json.dumps({**config, "n_latents": 128}))
    with pytest.raises(SaeMismatchError, match="do not match its config"):
        TopKSae.load_from_disk(tmp_path / "sae")


def plant_dead_latent_and_train(auxk_alpha: float, tmp_path) -> int:
    """Times latent 0 fires on the data after training, having been planted dead."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 16)).astype(np.float32)
    config = TrainConfig(n_latents=32, k=4, batch_size=128, epochs=10, lr=1e-2, warmup_steps=5,
                         auxk_alpha=auxk_alpha, dead_after=256)
    trainer = Trainer(TrainingData(x), config, tmp_path / f"auxk-{auxk_alpha}")
    with torch.no_grad():  # latent 0 never wins the top-k: its pre-activation sits far below the others
        trainer.sae.encoder.bias[0] = -3.0
    assert not (trainer.sae.encode_numpy(x)[1] == 0).any()
    trainer.fit(progress=False)
    _, indices = trainer.sae.encode_numpy(x)
    return int((indices == 0).sum())


def test_auxk_revives_a_planted_dead_latent(tmp_path):
    assert plant_dead_latent_and_train(0.0, tmp_path) == 0
    assert plant_dead_latent_and_train(1.0, tmp_path) > 0
