"""The top-K sparse autoencoder: the model and its config (`model`), its training data (`data`), training
(`train`) and adaptation to a corpus without judgments (`adapt`). Commands: `clsr train-sae` and
`clsr adapt-sae` (`command`)."""

from clsr.sae.config import SaeConfig
from clsr.sae.model import TopKSae, default_sae_path

__all__ = ["SaeConfig", "TopKSae", "default_sae_path"]
