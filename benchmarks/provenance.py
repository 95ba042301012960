"""Which SAE produced a benchmark's numbers, and whether it saw the collection in training.

An SAE fitted on a collection's passages and then measured on them gives *transductive* numbers
(like a PQ codebook trained on the corpus it indexes): fair for that use, but not evidence of how
it transfers. Every explorer benchmark records this beside its figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from clsr.sae.model import sae_checksum


def sae_provenance(sae_path: str | Path, dataset: str) -> dict:
    """{"name", "path", "sha256", "trained_on", "transductive", "relation"} for the SAE folder and a collection
    name; `relation` is clsr.sae.model.sae_relation's zero-shot, adapted or transductive."""
    from clsr.sae.model import sae_relation  # (harness no longer re-exports it since the package split)

    sae_path = Path(sae_path)
    config = json.loads((sae_path / "config.json").read_text())
    trained_on = sorted((config.get("training") or {}).get("data", {}).get("datasets", {}))
    name = Path(str(dataset)).name
    seen = any(t == str(dataset) or Path(t).name == name for t in trained_on)
    return {"name": sae_path.name, "path": str(sae_path), "sha256": sae_checksum(sae_path)[:16],
            "trained_on": trained_on, "transductive": seen, "relation": sae_relation(sae_path, dataset)}


def provenance_line(provenance: dict, dataset: str) -> str:
    """A sentence for a report: the SAE and how it relates to the collection (zero-shot, adapted, transductive)."""
    where = ", ".join(provenance["trained_on"]) or "unknown data"
    line = f"SAE `{provenance['name']}` (sha256 {provenance['sha256']}, trained on {where})"
    relation = provenance.get("relation") or ("transductive" if provenance["transductive"] else None)
    line += {"transductive": f": **transductive** on {dataset} (the SAE was fitted on its passages)",
             "adapted": f": **adapted** to {dataset} (from a base SAE that never saw it, without judgments)",
             "zero-shot": f": **zero-shot** on {dataset} (the SAE never saw its passages)"}.get(relation, "")
    return line + "."
