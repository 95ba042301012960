"""Which SAE produced a benchmark's numbers, and whether it saw the collection in training.

An SAE fitted on a collection's passages and then measured on them gives *transductive* numbers
(like a PQ codebook trained on the corpus it indexes): fair for that use, but not evidence of how
it transfers. Every explorer benchmark records this beside its figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from clsr.sae import sae_checksum


def sae_provenance(sae_path: str | Path, dataset: str) -> dict:
    """{"name", "path", "sha256", "trained_on", "transductive"} for the SAE folder and a collection name."""
    sae_path = Path(sae_path)
    config = json.loads((sae_path / "config.json").read_text())
    trained_on = sorted((config.get("training") or {}).get("data", {}).get("datasets", {}))
    name = Path(str(dataset)).name
    seen = any(t == str(dataset) or Path(t).name == name for t in trained_on)
    return {"name": sae_path.name, "path": str(sae_path), "sha256": sae_checksum(sae_path)[:16],
            "trained_on": trained_on, "transductive": seen}


def provenance_line(provenance: dict, dataset: str) -> str:
    """A sentence for a report: the SAE and, when it saw the collection, that the numbers are transductive."""
    where = ", ".join(provenance["trained_on"]) or "unknown data"
    line = f"SAE `{provenance['name']}` (sha256 {provenance['sha256']}, trained on {where})"
    if provenance["transductive"]:
        line += f": **transductive** on {dataset} (the SAE was fitted on its passages)"
    return line + "."
