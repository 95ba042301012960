"""Adapting a trained SAE to a new corpus: warm start, revival of latents dead there, a fixed step budget.

An SAE fitted on one corpus reconstructs another worse (FVU 0.07 on its own passages against
0.12-0.28 on unseen collections, issue 10), and its concept code loses retrieval quality with it.
Adaptation fine-tunes the SAE on the target corpus's own text, with no judgments: its passages,
their sentences and random spans, the spans standing in as the KL terms' pseudo-queries
(`clsr.sae.data`). The losses are those the base SAE was trained with (`clsr.sae.train`).

* **Warm start.** Every weight, ``b_dec`` included, starts from the base SAE, so concept ids keep
  their meaning where the new corpus uses them: descriptions and steering carry over. How many do
  is measured as the share of base concepts whose decoder direction stays above cosine 0.9.
* **Revival.** Latents that never fire on the target corpus are re-initialised on the residuals of
  its worst-reconstructed vectors (the resampling of Bricken et al. 2023, "Towards
  Monosemanticity"), so the capacity the new corpus does not use goes to what it lacks.
* **Budget.** A fixed number of steps (default 1,500: 380 s measured on SciFact on 2 free CPU
  cores), whatever the corpus's size, so adaptation costs the same on 5k passages as on 500k.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from clsr.sae.config import AdaptationRecord, BaseSae, SaeConfig, TrainConfig
from clsr.sae.model import TopKSae, sae_checksum
from clsr.sae.train import Trainer, TrainingData, passage_fvu

log = logging.getLogger(__name__)

KEPT_COSINE = 0.9  # a concept whose decoder direction stays this close is taken to keep its meaning


@dataclass(frozen=True)
class AdaptConfig:
    steps: int = 1500
    lr: float = 3e-4  # a third of the from-scratch rate: the warm start is already close
    warmup_steps: int = 20
    batch_size: int = 512
    revive: bool = True
    seed: int = 0
    device: str = "cpu"


class AdaptationReport(NamedTuple):
    fvu_before: float  # on the target's passages, at the SAE's K
    fvu_after: float
    revived: int  # latents dead on the target corpus, re-initialised
    kept: int  # base concepts (not revived) whose decoder direction stays above KEPT_COSINE
    compared: int  # base concepts not revived
    seconds: float  # training, revival included; encoding is not

    @property
    def kept_share(self) -> float:
        return self.kept / max(self.compared, 1)

    def to_dict(self) -> dict:
        return {**self._asdict(), "kept_share": round(self.kept_share, 4), "kept_cosine": KEPT_COSINE}


def firing_counts(sae: TopKSae, vectors: np.ndarray, sample: int = 100_000, seed: int = 0) -> np.ndarray:
    """How often each latent is among the active top-K on (a sample of) `vectors`: (n_latents,) int64."""
    rows = np.arange(len(vectors))
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
    acts, indices = sae.encode_numpy(np.asarray(vectors[rows], np.float32))
    return np.bincount(indices[acts > 0].ravel(), minlength=sae.config.n_latents)


@torch.no_grad()
def revive_latents(sae: TopKSae, latents: np.ndarray, vectors: np.ndarray, seed: int = 0,
                   sample: int = 20_000) -> None:
    """Point each of `latents` at the residual of a different badly reconstructed vector, in place.

    Vectors are drawn with probability proportional to their squared reconstruction error. The
    decoder row becomes the unit residual; the encoder row the same direction at the mean norm of
    the other latents' encoder rows, with their mean bias, so it can win a top-K slot at once.
    """
    if len(latents) == 0:
        return
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), min(sample, len(vectors)), replace=False))
    x = np.asarray(vectors[rows], np.float32)
    residual = x - sae.reconstruct_numpy(x)
    error = (residual ** 2).sum(1).astype(np.float64)
    picks = rng.choice(len(x), size=len(latents), replace=len(latents) > len(x), p=error / error.sum())
    directions = torch.from_numpy(residual[picks]).to(sae.device)
    directions /= directions.norm(dim=1, keepdim=True).clamp(min=1e-8)
    index = torch.as_tensor(latents, dtype=torch.long, device=sae.device)
    alive = torch.ones(sae.config.n_latents, dtype=torch.bool, device=sae.device)
    alive[index] = False
    sae.W_dec.data[index] = directions
    sae.encoder.weight.data[index] = directions * sae.encoder.weight.data[alive].norm(dim=1).mean()
    sae.encoder.bias.data[index] = sae.encoder.bias.data[alive].mean()


def adapt_sae(base: TopKSae, data: TrainingData, output_dir: str | os.PathLike, config: AdaptConfig = AdaptConfig(),
              provenance: dict | None = None, progress: bool = True) -> tuple[TopKSae, AdaptationReport]:
    """Fine-tune `base` on `data` (the target corpus's vectors) and save it to `output_dir`.

    `data.documents` must hold the target's passage embeddings (FVU is reported on them) and
    `data.queries`/`data.neighbours` the KL pseudo-queries, as `clsr.sae.data.build_training_data`
    assembles them. The losses, their weights and Multi-TopK come from the base SAE's training
    config. `provenance` (base SAE, corpus) is recorded in the saved config under
    ``training.adaptation``. Raises ValueError when the data does not fit the SAE.
    """
    if data.documents is None or not len(data.documents):
        raise ValueError("adaptation needs the target corpus's passage embeddings (data.documents)")
    base.check_dim(data.vectors.shape[1], "the target corpus's embeddings")
    start = time.perf_counter()
    # The base's loss settings; an SAE that records none gets clsr's default recipe (retrieval KL on).
    trained = base.config.training.settings or TrainConfig(kl_weight=0.1, kl_sparse_weight=0.3)
    fvu_before = passage_fvu(base, data.documents)
    model = TopKSae(base.config, device=config.device)
    model.load_state_dict(base.state_dict())
    dead = (np.flatnonzero(firing_counts(base, data.vectors, seed=config.seed) == 0) if config.revive
            else np.array([], int))
    revive_latents(model, dead, data.vectors, seed=config.seed)
    log.info("%d of %d latents never fire on the target corpus%s", len(dead), base.config.n_latents,
             "; revived" if config.revive else "")
    steps_per_epoch = math.ceil(len(data.vectors) / config.batch_size)
    train_config = TrainConfig(
        n_latents=base.config.n_latents, k=base.config.k, batch_size=config.batch_size,
        epochs=math.ceil(config.steps / steps_per_epoch), lr=config.lr, warmup_steps=config.warmup_steps,
        seed=config.seed, auxk_alpha=trained.auxk_alpha, dead_after=trained.dead_after,
        kl_weight=trained.kl_weight if data.has_pairs else 0.0,
        kl_sparse_weight=trained.kl_sparse_weight if data.has_pairs else 0.0,
        tau=trained.tau, tau_sparse=trained.tau_sparse, kl_queries=trained.kl_queries, multi_k=trained.multi_k,
        max_steps=config.steps, device=config.device)
    trainer = Trainer(data, train_config, output_dir, encoder=base.config.encoder, init_from=model,
                      provenance={"data": (provenance or {}).get("data")})
    adapted = trainer.fit(progress=progress)
    seconds = time.perf_counter() - start

    before = base.W_dec.detach().to("cpu", torch.float32)
    after = adapted.W_dec.detach().to("cpu", torch.float32)
    cosine = (before * after).sum(1)  # both unit-norm
    not_revived = np.setdiff1d(np.arange(base.config.n_latents), dead)
    kept = int((cosine[not_revived] > KEPT_COSINE).sum())
    report = AdaptationReport(round(fvu_before, 6), adapted.config.training.reference_fvu, len(dead),
                              kept, len(not_revived), round(seconds, 2))
    origin = provenance or {}
    adaptation = AdaptationRecord(base_sae=BaseSae(**origin["base_sae"]) if "base_sae" in origin else None,
                                  corpus=origin.get("corpus"),
                                  config=dataclasses.asdict(config), report=report.to_dict())
    adapted.config = dataclasses.replace(adapted.config,
                                         training=dataclasses.replace(adapted.config.training, adaptation=adaptation))
    output_dir = Path(output_dir)
    adapted.save_to_disk(output_dir)
    shutil.rmtree(trainer.checkpoint_dir, ignore_errors=True)  # a fixed budget is rerun, not resumed
    return adapted, report


def decoder_cosines(base: TopKSae, adapted: TopKSae) -> np.ndarray:
    """(n_latents,) cosine between each latent's decoder direction before and after adaptation: above
    :data:`KEPT_COSINE` a concept is taken to keep its meaning (and its description)."""
    before = base.W_dec.detach().to("cpu", torch.float32)
    after = adapted.W_dec.detach().to("cpu", torch.float32)
    norms = before.norm(dim=1) * after.norm(dim=1)
    return ((before * after).sum(1) / norms.clamp(min=1e-12)).numpy()


def corpus_training_data(corpus: str, encoder, recipe=None) -> tuple[TrainingData, dict]:
    """The target corpus's own training vectors: passages, sentences and spans; never any query.

    Spans are the KL terms' pseudo-queries. Encoded through the embedding cache, so a second
    adaptation of the same corpus encodes nothing.
    """
    from clsr.sae.data import DataRecipe, build_training_data

    return build_training_data([corpus], encoder, recipe or DataRecipe(), query_splits={corpus: []})


def base_provenance(base_path: str | os.PathLike, corpus: str) -> dict:
    """What an adapted SAE records of where it came from: the base SAE (path, sha256) and the corpus."""
    base_path = Path(base_path)
    base_data = SaeConfig.read(base_path).training.data
    return {"base_sae": {"name": base_path.name, "path": str(base_path.resolve()), "sha256": sae_checksum(base_path),
                         "data": (base_data or {}).get("datasets")},
            "corpus": corpus}


def adapt_to_corpus(base_path: str | os.PathLike, corpus: str, encoder, output_dir: str | os.PathLike,
                    config: AdaptConfig = AdaptConfig(),
                    progress: bool = True) -> tuple[TopKSae, AdaptationReport, float]:
    """Encode `corpus`'s training vectors (cached), adapt the SAE at `base_path` to them, save to `output_dir`.

    Returns the adapted SAE, its report and the seconds spent encoding (0 when all were cached).
    Raises SaeMismatchError when `encoder` is not the one the base SAE was trained on.
    """
    base = TopKSae.load_from_disk(base_path, device=config.device)
    base.check_encoder(encoder.config.to_dict())
    start = time.perf_counter()
    data, data_provenance = corpus_training_data(corpus, encoder)
    encode_seconds = time.perf_counter() - start
    sae, report = adapt_sae(base, data, output_dir, config, progress=progress,
                            provenance={**base_provenance(base_path, corpus), "data": data_provenance})
    return sae, report, encode_seconds
