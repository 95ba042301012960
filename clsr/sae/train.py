"""Training the top-K SAE: reconstruction, AuxK, and two retrieval-oriented KL terms.

Loss per step (every term is scale-free, so the weights mean something):

* ``fvu``: fraction of variance unexplained on a batch of vectors (documents, sentences, spans,
  queries);
* ``auxk_alpha * auxk``: dead latents predict the residual (Gao et al. 2024);
* ``kl_weight * KL(softmax(q.D/tau) || softmax(q_hat.D_hat/tau))``: for a batch of training queries,
  D holds each query's nearest documents in the original space plus the other queries' ones, so the
  round trip keeps the query-document score distribution;
* ``kl_sparse_weight * KL(softmax(q.D/tau) || softmax(z_q.z_d/tau_sparse))``: the same target for the
  dot product of the top-K codes, which is what the concept index scores.
* Multi-TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", sec. 5.3): for each
  smaller K' in ``multi_k`` the FVU and the code KL are added again on the K' largest activations,
  so that cutting a code to K' (a smaller index) keeps working instead of degrading sharply.

A trainer can also start from an existing SAE (``init_from``): all weights including ``b_dec`` are
kept, which is how `clsr.sae.adapt` fine-tunes a shipped SAE to a new corpus.

KL terms are nats per query. Adam with linear warm-up then cosine decay; deterministic for a seed
on CPU; a checkpoint (safetensors + JSON) after every epoch, from which ``resume`` continues exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from clsr.sae.config import SaeConfig, TrainConfig, TrainingRecord
from clsr.sae.model import TopKSae

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Arrays may be np.memmap, so a corpus larger than memory trains too."""

    vectors: np.ndarray  # (n, d) everything to reconstruct
    queries: np.ndarray | None = None  # (n_q, d) training queries, for the KL terms
    documents: np.ndarray | None = None  # (n_d, d)
    neighbours: np.ndarray | None = None  # (n_q, N) indices into documents: each query's nearest

    @property
    def has_pairs(self) -> bool:
        return self.queries is not None and self.documents is not None and self.neighbours is not None


def nearest_documents(queries: np.ndarray, documents: np.ndarray, n: int, batch_size: int = 1024) -> np.ndarray:
    """Exact top-n documents per query by inner product, (n_q, n) int64."""
    out = np.zeros((len(queries), n), np.int64)
    docs = torch.from_numpy(np.array(documents, np.float32))  # a copy: memmaps are read-only
    for start in range(0, len(queries), batch_size):
        q = torch.from_numpy(np.array(queries[start:start + batch_size], np.float32))
        out[start:start + len(q)] = (q @ docs.T).topk(min(n, len(docs)), dim=1).indices.numpy()
    return out


def _kl(target_logits: Tensor, predicted_logits: Tensor) -> Tensor:
    """KL(target || predicted), nats per row, averaged."""
    target = target_logits.log_softmax(-1)
    return (target.exp() * (target - predicted_logits.log_softmax(-1))).sum(-1).mean()


def _fvu(x: Tensor, reconstruction: Tensor) -> Tensor:
    """Fraction of variance unexplained, as `TopKSae.forward` computes it."""
    return (x - reconstruction).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp(min=1e-12)


def _dense_codes(acts: Tensor, indices: Tensor, n_latents: int) -> Tensor:
    return torch.zeros(len(acts), n_latents, dtype=acts.dtype, device=acts.device).scatter(1, indices, acts)


def passage_fvu(sae: TopKSae, passages: np.ndarray, k: int | None = None, sample: int = 5000, seed: int = 0) -> float:
    """FVU of the SAE on (a seeded sample of at most `sample`) passage embeddings, at k (default: trained K).

    This is the number `clsr index` compares a new corpus against: the SAE's fit on the kind of
    vector it indexes (passages), not on the sentences and spans it was also trained on.
    """
    rows = np.arange(len(passages))
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
    x = np.asarray(passages[rows], np.float32)
    reconstruction = sae.reconstruct_numpy(x, k)
    return float(((x - reconstruction) ** 2).sum() / max(((x - x.mean(0)) ** 2).sum(), 1e-12))


class Trainer:
    def __init__(self, data: TrainingData, config: TrainConfig, output_dir: str | os.PathLike,
                 encoder: dict | None = None, provenance: dict | None = None, init_from: TopKSae | None = None):
        self.data, self.config, self.output_dir = data, config, Path(output_dir)
        d_in = data.vectors.shape[1]
        for name in ("queries", "documents"):
            array = getattr(data, name)
            if array is not None and array.shape[1] != d_in:
                raise ValueError(f"{name} are {array.shape[1]}-d but the vectors are {d_in}-d")
        if (config.kl_weight or config.kl_sparse_weight) and not data.has_pairs:
            raise ValueError("the KL terms need training queries, documents and their neighbours")
        torch.manual_seed(config.seed)
        sae_config = SaeConfig(d_in, config.n_latents, config.k, encoder=encoder,
                               training=TrainingRecord(settings=config, data=(provenance or {}).get("data")))
        self.sae = TopKSae(sae_config, device=config.device)
        self.warm_started = init_from is not None
        if init_from is not None:
            shape = (init_from.config.d_in, init_from.config.n_latents, init_from.config.k)
            if shape != (d_in, config.n_latents, config.k):
                raise ValueError(f"init_from has shape d_in={init_from.config.d_in}, n_latents="
                                 f"{init_from.config.n_latents}, k={init_from.config.k}; the training config has "
                                 f"d_in={d_in}, n_latents={config.n_latents}, k={config.k}")
            self.sae.load_state_dict({name: t.to(config.device) for name, t in init_from.state_dict().items()})
        self.steps_per_epoch = math.ceil(len(data.vectors) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.since_fired = torch.zeros(config.n_latents, dtype=torch.long, device=config.device)
        self.step = 0
        self.epoch = 0
        self.final_summary: dict[str, float] | None = None  # the last epoch's mean losses, kept in the config

    def _lr_factor(self, step: int) -> float:
        if step < self.config.warmup_steps:
            return (step + 1) / self.config.warmup_steps
        progress = (step - self.config.warmup_steps) / max(1, self.total_steps - self.config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def _batch(self, array: np.ndarray, rows: np.ndarray) -> Tensor:
        # Sorted rows read a memmap sequentially; order inside a batch does not matter to the loss.
        return torch.as_tensor(np.asarray(array[np.sort(rows)], np.float32), device=self.config.device)

    def dead_fraction(self) -> float:
        return float((self.since_fired > self.config.dead_after).float().mean())

    def train_step(self, vectors: Tensor, queries: Tensor | None, documents: Tensor | None) -> dict[str, float]:
        config, sae = self.config, self.sae
        dead_mask = self.since_fired > config.dead_after
        out = sae(vectors, dead_mask=dead_mask)
        loss = out.fvu + config.auxk_alpha * out.auxk_loss
        terms = {"fvu": out.fvu.item(), "auxk": out.auxk_loss.item()}
        for small_k in config.multi_k:
            # Activations are sorted, so the K' largest are the first K' of the K already chosen.
            fvu_small = _fvu(vectors, sae.decode(out.latent_acts[:, :small_k], out.latent_indices[:, :small_k]))
            loss = loss + fvu_small
            terms[f"fvu_k{small_k}"] = fvu_small.item()
        if queries is not None and documents is not None:
            target = queries @ documents.T / config.tau
            q_out, d_out = sae(queries), sae(documents)
            if config.kl_weight:
                kl = _kl(target, q_out.reconstruction @ d_out.reconstruction.T / config.tau)
                loss = loss + config.kl_weight * kl
                terms["kl"] = kl.item()
            if config.kl_sparse_weight:
                for small_k in (config.k, *config.multi_k):
                    z_q = _dense_codes(q_out.latent_acts[:, :small_k], q_out.latent_indices[:, :small_k],
                                       config.n_latents)
                    z_d = _dense_codes(d_out.latent_acts[:, :small_k], d_out.latent_indices[:, :small_k],
                                       config.n_latents)
                    kl_sparse = _kl(target, z_q @ z_d.T / config.tau_sparse)
                    loss = loss + config.kl_sparse_weight * kl_sparse
                    terms["kl_sparse" if small_k == config.k else f"kl_sparse_k{small_k}"] = kl_sparse.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        self.optimizer.step()
        self.scheduler.step()
        sae.set_decoder_norm_to_unit_norm()
        fired = torch.zeros_like(self.since_fired, dtype=torch.bool)
        fired[out.latent_indices[out.latent_acts > 0]] = True
        self.since_fired += len(vectors)
        self.since_fired[fired] = 0
        self.step += 1
        terms["loss"] = loss.item()
        return terms

    def _init_b_dec(self) -> None:
        rng = np.random.default_rng(self.config.seed)
        sample = rng.choice(len(self.data.vectors), size=min(100_000, len(self.data.vectors)), replace=False)
        self.sae.b_dec.data = self._batch(self.data.vectors, sample).mean(0)

    def fit(self, progress: bool = True, on_epoch: Callable[[int, dict], None] | None = None) -> TopKSae:
        """Train the remaining epochs, checkpointing after each; returns the SAE (also saved)."""
        from clsr.progress import progress_bar

        config, data = self.config, self.data
        if self.step == 0 and not self.warm_started:
            self._init_b_dec()
        use_pairs = bool(config.kl_weight or config.kl_sparse_weight)
        with progress_bar(total=self.total_steps, initial=self.step, desc="training SAE", unit="step",
                          enabled=progress) as bar:
            for epoch in range(self.epoch, config.epochs):
                # Seeded per epoch, so a resumed run draws exactly the batches the full run would.
                rng = np.random.default_rng([config.seed, epoch])
                order = rng.permutation(len(data.vectors))
                query_order = rng.permutation(len(data.queries)) if use_pairs else None
                sums: dict[str, float] = {}
                steps_this_epoch = 0
                for i in range(self.steps_per_epoch):
                    if self.step >= self.total_steps:
                        break
                    steps_this_epoch += 1
                    rows = order[i * config.batch_size:(i + 1) * config.batch_size]
                    queries = documents = None
                    if use_pairs:
                        picks = np.take(query_order, np.arange(i * config.kl_queries, (i + 1) * config.kl_queries),
                                        mode="wrap")
                        candidates = np.unique(data.neighbours[picks].ravel())
                        queries, documents = self._batch(data.queries, picks), self._batch(data.documents, candidates)
                    terms = self.train_step(self._batch(data.vectors, rows), queries, documents)
                    for name, value in terms.items():
                        sums[name] = sums.get(name, 0.0) + value
                    bar.set_postfix(loss=f"{terms['loss']:.4f}", fvu=f"{terms['fvu']:.4f}",
                                    dead=f"{self.dead_fraction():.1%}", refresh=False)
                    bar.update()
                self.epoch = epoch + 1
                summary = {name: total / max(steps_this_epoch, 1) for name, total in sums.items()}
                summary["dead_fraction"] = self.dead_fraction()
                self.save_checkpoint()
                log.info("epoch %d: %s", self.epoch, summary)
                self.final_summary = summary
                if on_epoch:
                    on_epoch(self.epoch, summary)
                if self.step >= self.total_steps:
                    break
        training = self.sae.config.training
        if self.final_summary:
            final_epoch = {k: round(v, 6) for k, v in self.final_summary.items()}
            training = dataclasses.replace(training, final_epoch=final_epoch)
        if self.data.documents is not None and len(self.data.documents):
            training = dataclasses.replace(training, reference_fvu=round(passage_fvu(self.sae, self.data.documents), 6))
        self.sae.config = dataclasses.replace(self.sae.config, training=training)
        self.sae.save_to_disk(self.output_dir)
        return self.sae

    # -- checkpoints: safetensors for tensors, JSON for the rest ----------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoint"

    def save_checkpoint(self) -> None:
        directory = self.checkpoint_dir
        tmp = directory.with_name("checkpoint.tmp")
        self.sae.save_to_disk(tmp / "sae")
        tensors = {"since_fired": self.since_fired.cpu()}
        names = {p: n for n, p in self.sae.named_parameters()}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                for key, value in self.optimizer.state[p].items():
                    tensors[f"{names[p]}.{key}"] = value.detach().cpu().reshape(-1) if value.dim() == 0 else value.cpu()
        save_file(tensors, str(tmp / "trainer.safetensors"))
        (tmp / "trainer.json").write_text(json.dumps({"step": self.step, "epoch": self.epoch,
                                                     "config": dataclasses.asdict(self.config)}, indent=2))
        if directory.exists():
            import shutil

            shutil.rmtree(directory)
        os.replace(tmp, directory)

    def resume(self) -> None:
        """Load the last checkpoint in output_dir; the config must match the one it was made with."""
        directory = self.checkpoint_dir
        if not (directory / "trainer.json").exists():
            raise FileNotFoundError(f"no checkpoint to resume from in {self.output_dir}")
        state = json.loads((directory / "trainer.json").read_text())
        saved = TrainConfig(**state["config"])
        if dataclasses.replace(saved, device=self.config.device) != self.config:
            raise ValueError(f"the checkpoint was trained with {saved}, not {self.config}")
        loaded = TopKSae.load_from_disk(directory / "sae", device=self.config.device)
        self.sae.load_state_dict(loaded.state_dict())
        tensors = load_file(str(directory / "trainer.safetensors"), device=self.config.device)
        self.since_fired = tensors["since_fired"]
        for name, p in self.sae.named_parameters():
            self.optimizer.state[p] = {
                "step": tensors[f"{name}.step"].reshape(()),
                "exp_avg": tensors[f"{name}.exp_avg"],
                "exp_avg_sq": tensors[f"{name}.exp_avg_sq"],
            }
        self.step, self.epoch = state["step"], state["epoch"]
        with warnings.catch_warnings():  # replaying the schedule without optimizer steps is the point
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(self.step):
                self.scheduler.step()
