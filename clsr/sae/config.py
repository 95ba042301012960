"""An SAE's ``config.json``, read and written here only: its shape (d_in, n_latents, k), the dense encoder it
was trained on, and a typed record of how it was trained and, for an adapted SAE, adapted.

The file is the JSON of `SaeConfig`; its ``training`` object is `TrainingRecord`, whose settings are
`TrainConfig`'s fields written flat beside ``data``, ``final_epoch``, ``reference_fvu`` and ``adaptation``
(the layout clsr 0.1 wrote, which reads unchanged). An unknown or malformed field is a one-line
`SaeConfigError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clsr.errors import ClsrError

CONFIG_NAME = "config.json"


class SaeConfigError(ClsrError, ValueError):
    """A config.json that is not an SAE config clsr can read."""


@dataclass(frozen=True)
class TrainConfig:
    """How an SAE is trained; `clsr train-sae` takes one flag per field (clsr.options.add_config_options)."""

    n_latents: int = field(default=8192, metadata={"help": "dictionary size"})
    k: int = field(default=128, metadata={"help": "active concepts per vector"})
    batch_size: int = field(default=512, metadata={"help": "vectors per step"})
    epochs: int = field(default=10, metadata={"help": "passes over the training vectors"})
    # None: 2e-4 / sqrt(n_latents / 2**14), sparsify's scaling rule
    lr: float | None = field(default=None, metadata={"help": "Adam learning rate (default 2e-4/sqrt(n_latents/16384))"})
    warmup_steps: int = field(default=100, metadata={"help": "steps of linear learning-rate warm-up"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation, the batches and the data recipe"})
    auxk_alpha: float = field(default=1 / 32, metadata={"help": "weight of the AuxK dead-latent loss"})
    dead_after: int = field(default=200_000,  # vectors seen without firing before a latent counts as dead
                            metadata={"help": "vectors without firing before a latent is dead"})
    kl_weight: float = field(default=0.0, metadata={"help": "weight of KL on reconstructed query.doc scores"})
    kl_sparse_weight: float = field(default=0.0, metadata={"help": "weight of KL on top-K code dot products"})
    tau: float = field(default=0.05, metadata={"help": "softmax temperature of the KL target"})
    tau_sparse: float = field(default=0.05, metadata={"help": "temperature of the code dot products"})
    kl_queries: int = field(default=64, metadata={"help": "training queries per step for the KL terms"})
    multi_k: tuple[int, ...] = field(default=(), metadata={  # smaller Ks whose FVU and code KL are added
        "help": "a smaller K whose FVU and code KL are also trained (Multi-TopK; repeat for several), so that "
                "indexes built with --doc-k K' keep their quality"})
    max_steps: int | None = field(default=None, metadata={  # a step budget; training stops there even mid-epoch
        "help": "stop after this many steps, even mid-epoch"})
    device: str = "cpu"

    def __post_init__(self):
        object.__setattr__(self, "multi_k", tuple(self.multi_k))  # JSON gives a list back
        if bad := [k for k in self.multi_k if not 0 < k < self.k]:
            raise ValueError(f"multi_k {bad}: each must be in 1..{self.k - 1} (below k={self.k})")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.n_latents / 2**14)


TRAIN_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclass(frozen=True)
class BaseSae:
    """The SAE an adapted one started from: its folder, weights checksum and the datasets it was trained on."""

    name: str
    path: str
    sha256: str
    data: dict[str, Any] | None = None  # the base's training datasets: {name: counts}


@dataclass(frozen=True)
class AdaptationRecord:
    """``training.adaptation``: what `clsr adapt-sae` adapted, to which corpus, how, and how well."""

    base_sae: BaseSae | None = None  # None when adapt_sae was given no provenance
    corpus: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # clsr.sae.adapt.AdaptConfig's fields
    report: dict[str, Any] = field(default_factory=dict)  # clsr.sae.adapt.AdaptationReport's fields


@dataclass(frozen=True)
class TrainingRecord:
    """``training``: the settings (TrainConfig), the data's provenance, the last epoch's losses, the FVU on
    the SAE's own training passages, and the adaptation, if any. Every part is optional: an SAE built by
    hand records nothing."""

    settings: TrainConfig | None = None
    data: dict[str, Any] | None = None  # {"datasets": {name: counts}, "recipe": {...}}
    final_epoch: dict[str, float] | None = None
    reference_fvu: float | None = None
    adaptation: AdaptationRecord | None = None

    @property
    def datasets(self) -> list[str]:
        """The datasets the SAE itself was trained (or adapted) on, in the order recorded."""
        return list((self.data or {}).get("datasets") or {})

    def seen_collections(self) -> list[str]:
        """Every dataset this SAE's weights have seen: its own, and its base SAE's for an adapted one."""
        return self.datasets + self._base_datasets()

    def _base_datasets(self) -> list[str]:
        base = self.adaptation.base_sae if self.adaptation else None
        return list(base.data or {}) if base else []

    def relation(self, dataset: str | os.PathLike) -> str:
        """How an SAE relates to the collection it is measured on, as every reported figure must say.

        ``transductive``: the SAE (or its base) was trained on the collection; ``adapted``: adapted to
        it without judgments from a base that never saw it; ``zero-shot``: it never saw it.
        """
        name = Path(str(dataset)).name

        def names(collection: str) -> bool:
            return collection == str(dataset) or name in Path(collection).parts

        own = [] if self.adaptation else self.datasets
        if any(names(c) for c in own + self._base_datasets()):
            return "transductive"
        corpus = self.adaptation.corpus if self.adaptation else None
        return "adapted" if corpus and names(corpus) else "zero-shot"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dataclasses.asdict(self.settings) if self.settings else {}
        if "multi_k" in out:
            out["multi_k"] = list(out["multi_k"])
        for name in ("data", "final_epoch", "reference_fvu"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.adaptation is not None:
            out["adaptation"] = dataclasses.asdict(self.adaptation)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "the SAE config") -> TrainingRecord:
        """Raises SaeConfigError naming ``where`` for an unknown field or a malformed record."""
        known = set(TRAIN_SETTINGS) | {"data", "final_epoch", "reference_fvu", "adaptation"}
        if unknown := sorted(set(data) - known):
            raise SaeConfigError(f"{where}: unknown field training.{unknown[0]}")
        settings = {k: data[k] for k in TRAIN_SETTINGS if k in data}
        try:
            adaptation = data.get("adaptation")
            if adaptation is not None:
                base = adaptation.get("base_sae")
                adaptation = AdaptationRecord(**{**adaptation, "base_sae": BaseSae(**base) if base else None})
            return cls(settings=TrainConfig(**settings) if settings else None, data=data.get("data"),
                       final_epoch=data.get("final_epoch"), reference_fvu=data.get("reference_fvu"),
                       adaptation=adaptation)
        except (TypeError, ValueError, KeyError) as e:
            raise SaeConfigError(f"{where}: malformed training record ({e})") from None


@dataclass(frozen=True)
class SaeConfig:
    """The JSON beside ``sae.safetensors``. ``encoder`` is the EncoderConfig (model, pooling, prefix, ...) the
    SAE was trained on, so embeddings from any other encoder are refused."""

    d_in: int
    n_latents: int
    k: int
    encoder: dict | None = None
    training: TrainingRecord = field(default_factory=TrainingRecord, compare=False)  # provenance only

    def __post_init__(self):
        if not 0 < self.k <= self.n_latents:
            raise ValueError(f"k must be in 1..n_latents ({self.n_latents}), not {self.k}")
        if isinstance(self.training, Mapping):
            object.__setattr__(self, "training", TrainingRecord.from_dict(self.training))

    def to_dict(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "n_latents": self.n_latents, "k": self.k, "encoder": self.encoder,
                "training": self.training.to_dict()}

    def write(self, folder: str | os.PathLike) -> None:
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, folder: str | os.PathLike) -> SaeConfig:
        """Raises SaeConfigError naming the file for malformed JSON, or a missing or unknown field."""
        path = Path(folder) / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SaeConfigError(f"{path}: not JSON ({e})") from None
        if not isinstance(data, dict):
            raise SaeConfigError(f"{path}: expected a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - fields):
            raise SaeConfigError(f"{path}: unknown field {unknown[0]!r}")
        if missing := sorted({"d_in", "n_latents", "k"} - set(data)):
            raise SaeConfigError(f"{path}: missing field {missing[0]!r}")
        training = TrainingRecord.from_dict(data.get("training") or {}, where=str(path))
        try:
            return cls(**{**data, "training": training})
        except (TypeError, ValueError) as e:
            raise SaeConfigError(f"{path}: {e}") from None
