"""clsr's SAE and sentence-transformers' ``SparseEncoder`` (CSR models), both ways.

The two compute the same encoder map: clsr's `TopKSae.encode` is ``relu(topk(W (x - b_dec) + b))``, and
sentence-transformers' ``SparseAutoEncoder`` module computes ``relu(topk(linear(x - pre_bias, W, latent_bias)))``,
so ``pre_bias = b_dec``, ``W = encoder.weight`` and ``latent_bias = encoder.bias``. They differ in the decoder:
sentence-transformers ties it (``W.T``, no unit norm), clsr's is untied with unit-norm atoms.

* :func:`export_sparse_encoder` writes a folder ``SparseEncoder(folder)`` loads offline: the dense encoder's
  modules (Transformer, Pooling, Normalize as the :class:`~clsr.encode.dense.EncoderConfig` says) followed by a
  ``SparseAutoEncoder`` holding the SAE's encoder weights, its ``k`` the doc K, plus a model card.
* :func:`load_csr_model` reads such a folder, or any CSR model whose last module is a ``SparseAutoEncoder``, as
  an ``EncoderConfig`` (the folder's own transformer, pooling, normalisation, query prompt and length) and a
  `TopKSae` whose decoder is the tied one; :func:`convert_csr_model` writes that as a clsr SAE folder, which is
  how ``clsr index --sae FOLDER`` indexes a CSR model.

Folders are read from their JSON files (``modules.json`` and each module's config), so that a folder that is
not such a model is refused in one line saying what it holds, before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from clsr.encode.dense import EncoderConfig, model_location
from clsr.errors import ClsrError
from clsr.sae.config import SaeConfig, TrainingRecord
from clsr.sae.model import WEIGHTS_NAME, TopKSae, sae_checksum

MODULES_FILE = "modules.json"
EXPORT_RECORD = "clsr_export.json"  # what clsr wrote into an exported folder: the SAE, doc K and query K
SAE_TYPE_SUFFIX = "SparseAutoEncoder"
SUPPORTED = {"Transformer", "Pooling", "Normalize", SAE_TYPE_SUFFIX}

log = logging.getLogger(__name__)


class CsrModelError(ClsrError, ValueError):
    """A folder that is not a sentence-transformers CSR model clsr can read."""


def _module_name(type_name: str) -> str:
    return type_name.rpartition(".")[2]


def is_sparse_encoder_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a sentence-transformers model folder (it has ``modules.json``)."""
    return (Path(folder) / MODULES_FILE).is_file()


def describe_folder(folder: str | os.PathLike) -> str:
    """What a folder holds, in a few words, for an error that says why it was refused."""
    folder = Path(folder)
    if not folder.exists():
        return "it does not exist"
    if not folder.is_dir():
        return "it is a file, not a folder"
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return f"it holds {shown}"


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CsrModelError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CsrModelError(f"{path}: not JSON ({e})") from None


def _modules(folder: Path) -> list[dict]:
    modules = _read_json(folder / MODULES_FILE)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise CsrModelError(f"{folder / MODULES_FILE}: expected a list of modules with a type each")
    return sorted(modules, key=lambda m: m.get("idx", 0))


@dataclass(frozen=True)
class CsrModel:
    """A CSR model read from its folder: the dense side as clsr's EncoderConfig, the SAE module's settings."""

    folder: Path
    encoder: EncoderConfig
    sae_folder: Path  # the SparseAutoEncoder module's folder (config.json and model.safetensors)
    input_dim: int
    hidden_dim: int
    k: int  # the SparseAutoEncoder module's own k
    max_active_dims: int | None  # the model-level K (config_sentence_transformers.json), if set
    query_k: int | None  # the query K clsr recorded when it exported the folder (clsr_export.json), if any

    @property
    def active_k(self) -> int:
        """The active dimensions sentence-transformers gives a text, by ``encode_document`` and ``encode_query``
        alike: ``max_active_dims`` where the folder sets it, else the module's ``k``.

        sentence-transformers (6.3) passes ``max_active_dims`` to the module as the K of its top-K, in place of
        ``k`` (below k or above it), then keeps that many dimensions of the output.
        """
        return self.max_active_dims if self.max_active_dims is not None else self.k


def read_csr_model(folder: str | os.PathLike) -> CsrModel:
    """The CSR model at ``folder``; raises CsrModelError (one line naming the file) for anything else.

    Accepted: Transformer, Pooling (mean or CLS token), an optional Normalize, then a ``SparseAutoEncoder``
    without input normalisation, as the last module. Anything else (SPLADE's MLM head, a Dense layer, a Router)
    is refused, saying which module it is.
    """
    folder = Path(folder).resolve()
    if not is_sparse_encoder_folder(folder):
        raise CsrModelError(f"{folder} is neither a clsr SAE (config.json and {WEIGHTS_NAME}) nor a "
                            f"sentence-transformers CSR model ({MODULES_FILE}); {describe_folder(folder)}")
    modules = _modules(folder)
    names = [_module_name(m["type"]) for m in modules]
    where = folder / MODULES_FILE
    if not names or names[-1] != SAE_TYPE_SUFFIX:
        last = names[-1] if names else "none"
        raise CsrModelError(f"{where}: a sentence-transformers model whose last module is {last} "
                            f"({' -> '.join(names)}), not a SparseAutoEncoder: not a CSR model")
    if unsupported := [n for n in names if n not in SUPPORTED]:
        raise CsrModelError(f"{where}: module {unsupported[0]} ({' -> '.join(names)}) is not one clsr's dense "
                            "encoder runs (Transformer, Pooling, Normalize, then the SparseAutoEncoder)")
    if names[:2] != ["Transformer", "Pooling"] or names[2:-1] not in ([], ["Normalize"]):
        raise CsrModelError(f"{where}: modules {' -> '.join(names)}; clsr reads Transformer -> Pooling "
                            "[-> Normalize] -> SparseAutoEncoder")
    transformer_dir = folder / modules[0].get("path", "")
    pooling = _read_json(folder / modules[1].get("path", "") / "config.json")
    mode = _pooling_mode(pooling, folder / modules[1].get("path", "") / "config.json")
    max_length = _max_length(transformer_dir)
    st_config_path = folder / "config_sentence_transformers.json"
    st_config = _read_json(st_config_path) if st_config_path.exists() else {}
    prompts = st_config.get("prompts") or {}
    query_prefix = prompts.get("query") or ""
    if any(prompts.get(name) for name in ("document", "passage", "corpus")):
        raise CsrModelError(f"{st_config_path}: a document prompt, which clsr's encoder does not add")
    sae_folder = folder / modules[-1].get("path", "")
    sae_config = _read_json(sae_folder / "config.json")
    try:
        input_dim, hidden_dim, k = int(sae_config["input_dim"]), int(sae_config["hidden_dim"]), int(sae_config["k"])
    except (KeyError, TypeError, ValueError) as e:
        raise CsrModelError(f"{sae_folder / 'config.json'}: not a SparseAutoEncoder config ({e})") from None
    if sae_config.get("normalize"):
        raise CsrModelError(f"{sae_folder / 'config.json'}: normalize is true (the SAE layer-normalises its input), "
                            "which clsr's SAE does not")
    record_path = folder / EXPORT_RECORD
    record = _read_json(record_path) if record_path.exists() else {}
    encoder = EncoderConfig(model=str(transformer_dir), pooling=mode, normalize="Normalize" in names,
                            query_prefix=query_prefix, max_length=int(max_length))
    max_active_dims = _max_active_dims(st_config, st_config_path, hidden_dim, sae_folder / "config.json")
    return CsrModel(folder=folder, encoder=encoder, sae_folder=sae_folder, input_dim=input_dim,
                    hidden_dim=hidden_dim, k=k, max_active_dims=max_active_dims, query_k=record.get("query_k"))


def _max_active_dims(st_config: dict, path: Path, hidden_dim: int, sae_config_path: Path) -> int | None:
    """``max_active_dims`` of ``config_sentence_transformers.json`` (None when unset); raises CsrModelError naming
    the file for a value sentence-transformers itself refuses (not a positive integer) or one above the number of
    dimensions (``hidden_dim`` of the SparseAutoEncoder's config), naming both numbers."""
    value = st_config.get("max_active_dims")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CsrModelError(f"{path}: max_active_dims {json.dumps(value)} is not a positive integer")
    if value > hidden_dim:
        raise CsrModelError(f"{path}: max_active_dims {value} is above the {hidden_dim} dimensions of the "
                            f"SparseAutoEncoder ({sae_config_path}'s hidden_dim)")
    return value


def _pooling_mode(config: dict, path: Path) -> str:
    mode = config.get("pooling_mode")
    if mode is None:  # sentence-transformers before v6: one boolean per mode
        modes = [name for name in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens",
                                   "weightedmean_tokens", "lasttoken") if config.get(f"pooling_mode_{name}")]
        mode = modes[0] if len(modes) == 1 else modes
    mode = mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
    pooling = {"mean": "mean", "mean_tokens": "mean", "cls": "cls", "cls_token": "cls"}.get(mode)
    if pooling is None:
        raise CsrModelError(f"{path}: pooling {mode!r}; clsr's encoder pools by mean or the CLS token")
    return pooling


def _max_length(transformer_dir: Path) -> int:
    """The tokens the Transformer module keeps: ``max_seq_length`` in ``sentence_bert_config.json`` (before v6), else
    the tokenizer's ``model_max_length`` (where v6 keeps it), else the model's positions, else 512."""
    candidates = [("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length"),
                  ("config.json", "max_position_embeddings")]
    for name, key in candidates:
        path = transformer_dir / name
        value = _read_json(path).get(key) if path.exists() else None
        if isinstance(value, int) and 0 < value < 100_000:
            return value
    return 512


def load_csr_model(folder: str | os.PathLike, device: str = "cpu") -> tuple[EncoderConfig, TopKSae]:
    """(the dense encoder's config, a `TopKSae` with the module's weights and its tied decoder) of a CSR model.

    The SAE's ``W_dec`` is the module's ``encoder.weight`` as it is (the tied decoder: not unit-norm), so clsr's
    reconstructions are sentence-transformers' ``decode``. Its k is the model's `CsrModel.active_k` (its
    ``max_active_dims`` where set), so that its codes are ``encode_document``'s and ``encode_query``'s.
    Raises CsrModelError as :func:`read_csr_model`.
    """
    model = read_csr_model(folder)
    weights_path = model.sae_folder / "model.safetensors"
    if not weights_path.exists():
        raise CsrModelError(f"{weights_path}: missing (clsr reads safetensors weights only)")
    state = load_file(str(weights_path))
    if "encoder.weight" not in state and "decoder.linear.weight" in state:
        # The decoder ties the encoder's weight: safetensors keeps the shared tensor once, under either name.
        state["encoder.weight"] = state["decoder.linear.weight"]
    expected = {"pre_bias": (model.input_dim,), "encoder.weight": (model.hidden_dim, model.input_dim),
                "latent_bias": (model.hidden_dim,)}
    found = {name: tuple(state[name].shape) for name in expected if name in state}
    if found != expected:
        raise CsrModelError(f"{weights_path}: weights {found} do not match its config {expected}")
    return model.encoder, tied_sae(state, model.active_k, model.encoder, device)


def tied_sae(state: dict, k: int, encoder: EncoderConfig | None = None, device: str = "cpu") -> TopKSae:
    """A `TopKSae` from a ``SparseAutoEncoder`` module's state dict (``pre_bias``, ``encoder.weight``,
    ``latent_bias``): the same encoder map, and the module's tied decoder as ``W_dec`` (not unit-norm)."""
    weight = state["encoder.weight"].detach().float().cpu()
    config = SaeConfig(d_in=weight.shape[1], n_latents=weight.shape[0], k=k,
                       encoder=encoder.to_dict() if encoder else None, training=TrainingRecord())
    sae = TopKSae(config, device=device)
    sae.load_state_dict({"encoder.weight": weight, "encoder.bias": state["latent_bias"].detach().float().cpu(),
                         "W_dec": weight.clone(), "b_dec": state["pre_bias"].detach().float().cpu()})
    return sae


def folder_checksum(folder: str | os.PathLike) -> str:
    """sha256 over every file of a folder (relative path, then content, in sorted order; hidden files skipped)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(str(relative.as_posix()).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def convert_csr_model(folder: str | os.PathLike, output: str | os.PathLike) -> SaeConfig:
    """Write the CSR model at ``folder`` as a clsr SAE folder (``config.json`` and ``sae.safetensors``) at ``output``.

    The SAE's config names the folder's transformer as its encoder (``model`` is that folder's absolute path) and
    records the source as its training data (``{"csr_model": {"path", "sha256"}}``). Its k is the K
    sentence-transformers encodes with (`CsrModel.active_k`), so an index's default doc K and query K give the
    model's own ``encode_document`` and ``encode_query`` codes. Where ``max_active_dims`` sets a K other than the
    module's ``k``, both are recorded in ``csr_model`` and logged. Returns the config.
    """
    model = read_csr_model(folder)
    encoder, sae = load_csr_model(folder)
    source = {"path": str(Path(folder).resolve()), "sha256": folder_checksum(folder)}
    if model.active_k != model.k:
        source.update(k=model.k, max_active_dims=model.max_active_dims)
        log.info("%s: max_active_dims %d %s the SparseAutoEncoder's k %d; sentence-transformers encodes passages and "
                 "queries with %d active dimensions, so the index's doc K and query K are %d", model.folder,
                 model.max_active_dims, "is below" if model.active_k < model.k else "replaces", model.k,
                 model.active_k, model.active_k)
    config = dataclasses.replace(sae.config, training=TrainingRecord(data={"csr_model": source}))
    sae.config = config
    sae.save_to_disk(output)
    return config


def csr_source(sae_path: str | os.PathLike) -> dict | None:
    """The CSR model a clsr SAE folder was converted from (``{"path", "sha256"}``), or None."""
    data = SaeConfig.read(sae_path).training.data or {}
    return data.get("csr_model")


# -- export -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportNotes:
    """What the model card says beyond the weights: where the SAE comes from and how well it fits."""

    sae_name: str
    trained_on: list[str]  # the datasets the SAE (and its base) saw
    relation: str | None = None  # "**zero-shot**" / adapted / transductive to ``corpus``, as the card prints it
    corpus: str | None = None
    corpus_fvu: float | None = None  # FVU on a sample of the corpus (the index's sae_fit)
    reference_fvu: float | None = None  # FVU on the SAE's own training passages
    query_mode: str = "topk"
    figures: dict[str, float] | None = None  # e.g. {"hybrid alpha": 0.3}
    words_weight: float | None = None  # the index's words' weight beside its concepts: the export leaves them out


def export_sparse_encoder(output: str | os.PathLike, *, sae_path: str | os.PathLike, encoder: EncoderConfig,
                          doc_k: int | None = None, query_k: int | None = None, notes: ExportNotes | None = None,
                          overwrite: bool = False, sources: Mapping[str, str | os.PathLike | None] | None = None
                          ) -> Path:
    """Write a sentence-transformers ``SparseEncoder`` folder for the SAE at ``sae_path`` on ``encoder``.

    The ``SparseAutoEncoder`` module's ``k`` (and the model's ``max_active_dims``) is ``doc_k`` (default: the SAE's
    k): documents get exactly clsr's doc codes. sentence-transformers keeps one ``max_active_dims`` for queries
    and documents, so a query K other than the doc K is recorded in ``clsr_export.json`` and the card, to pass as
    ``encode_query(..., max_active_dims=query_k)``. Returns the folder.

    The folder is written whole beside ``output`` and renamed into place (`clsr.index.atomic.atomic_directory`);
    ``clsr_export.json`` lists what it holds. ``output`` is refused (UnsafeOutputError, before anything loads) as
    `clsr.index.atomic.check_replaceable` says: the working folder or a parent of it, the SAE, the encoder's
    folder or another of ``sources`` (e.g. the index being exported), or a non-empty folder that is not an
    earlier export or holds files the export did not write; an earlier export is replaced only with ``overwrite``.
    """
    from clsr.index.atomic import SENTENCE_TRANSFORMERS, atomic_directory, check_replaceable

    sources = {"the SAE being exported": sae_path, "the encoder's model folder": model_location(encoder.model),
               **(sources or {})}
    target = check_replaceable(output, SENTENCE_TRANSFORMERS, sources)  # at once, before the models load
    empty = target.is_dir() and not any(target.iterdir())
    if target.exists() and not (empty or overwrite):
        raise ClsrError(f"{output} exists and is not empty; pass --overwrite to replace it")
    try:
        import sentence_transformers  # noqa: F401  (fail here, in one line, when the extra is missing)
    except ImportError:
        raise ClsrError("exporting to sentence-transformers needs it: pip install 'clsr[sentence-transformers]'"
                        ) from None
    with atomic_directory(output, overwrite or empty, kind=SENTENCE_TRANSFORMERS, sources=sources,
                          option="--output") as building:
        _write_sparse_encoder(building, sae_path, encoder, doc_k, query_k, notes)
    return Path(output)


def _write_sparse_encoder(output: Path, sae_path: str | os.PathLike, encoder: EncoderConfig, doc_k: int | None,
                          query_k: int | None, notes: ExportNotes | None) -> None:
    """Write the SparseEncoder folder into the (empty) folder ``output``; see `export_sparse_encoder`."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder

    sae = TopKSae.load_from_disk(sae_path)
    sae.check_encoder(encoder.to_dict())
    doc_k = sae.check_k(doc_k)
    query_k = query_k or sae.config.k
    transformer = Transformer(model_location(encoder.model), max_seq_length=encoder.max_length)
    sae.check_dim(transformer.get_embedding_dimension(), f"{encoder.model}'s embeddings")
    modules = [transformer, Pooling(transformer.get_embedding_dimension(),
                                    pooling_mode="mean" if encoder.pooling == "mean" else "cls")]
    if encoder.normalize:
        modules.append(Normalize())
    module = SparseAutoEncoder(input_dim=sae.config.d_in, hidden_dim=sae.config.n_latents, k=doc_k)
    with torch.no_grad():
        module.pre_bias.copy_(sae.b_dec)
        module.encoder.weight.copy_(sae.encoder.weight)
        module.latent_bias.copy_(sae.encoder.bias)
    modules.append(module)
    model = SparseEncoder(modules=modules, device="cpu", similarity_fn_name="dot", max_active_dims=doc_k,
                          prompts={"query": encoder.query_prefix} if encoder.query_prefix else None)
    model.save(str(output), create_model_card=False)
    (output / "README.md").write_text(model_card(sae, encoder, doc_k, query_k, notes))
    # "files": what the export wrote, so that replacing it later deletes nothing else (check_replaceable).
    record = {"format": 1, "sae": {"name": Path(sae_path).name, "sha256": sae_checksum(sae_path),
                                   "n_latents": sae.config.n_latents, "k": sae.config.k},
              "encoder": encoder.to_dict(), "doc_k": doc_k, "query_k": query_k,
              "query_mode": notes.query_mode if notes else "topk",
              "files": sorted([*os.listdir(output), EXPORT_RECORD])}
    (output / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def model_card(sae: TopKSae, encoder: EncoderConfig, doc_k: int, query_k: int, notes: ExportNotes | None) -> str:
    notes = notes or ExportNotes(sae_name="sae", trained_on=[])
    tied = bool(torch.equal(sae.W_dec.detach(), sae.encoder.weight.detach()))
    lines = [
        "---", "library_name: sentence-transformers", "tags:", "- sentence-transformers", "- sparse-encoder",
        "- sparse", "- csr", "- clsr", "pipeline_tag: feature-extraction", "---", "",
        f"# clsr concepts as a SparseEncoder: {notes.sae_name}", "",
        f"A top-K sparse autoencoder ({sae.config.n_latents} concepts, trained K={sae.config.k}) on "
        f"`{encoder.model}` embeddings ({encoder.pooling} pooling{', L2-normalised' if encoder.normalize else ''}, "
        f"{encoder.max_length} tokens), exported by clsr (Concept-Level Sparse Retrieval) as a sentence-transformers "
        "`SparseEncoder`: the dense model's modules followed by a `SparseAutoEncoder` (CSR) module holding the SAE's "
        "encoder. Dimension *i* is clsr's concept `c<i>`.", "",
        "```python", "from sentence_transformers import SparseEncoder", "",
        "model = SparseEncoder(\"path/to/this/folder\")",
        f"docs = model.encode_document(passages)  # {doc_k} active concepts each",
        f"queries = model.encode_query(questions{'' if query_k == doc_k else f', max_active_dims={query_k}'})",
        "scores = model.similarity(queries, docs)", "```", "",
        "## What it computes", "",
        f"- Documents: the top {doc_k} of `relu(W (x - b_dec) + b)`, exactly clsr's doc codes for an index of doc "
        f"K={doc_k} (the same latents and float activations, within fp32 rounding).",
        f"- Queries: clsr's index uses query K={query_k}"
        + (" (the same as the doc K)." if query_k == doc_k else
           f"; sentence-transformers keeps one `max_active_dims` ({doc_k}), so pass `max_active_dims={query_k}` "
           "to `encode_query`."),
    ]
    if notes.query_mode != "topk":
        lines.append(f"- The index this came from searches in `{notes.query_mode}` query mode, which this module "
                     "does not compute: its queries are top-K codes.")
    if notes.words_weight is not None:
        lines.append("- **Words are left out.** The index this came from also holds each passage's words with "
                     f"quantised BM25 weights, mixed with the concepts at W={notes.words_weight:g} (clsr's "
                     "docs/concept-index.md); this model gives the concept part only, as `clsr search "
                     "--words-weight 0` does. Fuse it with a BM25 run (e.g. RRF) to get the words' part back.")
    lines += [
        "- clsr quantises both sides to integer impacts for Lucene; these are the float activations before that.",
        "- **The decoder is not clsr's.** sentence-transformers' module ties its decoder (`W.T`); clsr's SAE has an "
        "untied, unit-norm decoder. `decode` on this module does not reproduce clsr's reconstructions (the hybrid "
        "search's dense side and explanations' decoded embeddings stay clsr's)." if not tied else
        "- The decoder is tied (`W.T`), as this SAE's was (it came from a CSR model): `decode` gives clsr's "
        "reconstructions.", "",
        "## Provenance and figures", "",
        f"- SAE: `{notes.sae_name}`; trained on: {', '.join(notes.trained_on) or 'not recorded'}.",
    ]
    if notes.reference_fvu is not None:
        lines.append(f"- FVU on its own training passages: {notes.reference_fvu:.4f}.")
    if notes.corpus:
        lines.append(f"- Exported from an index of `{notes.corpus}`, to which the SAE is {notes.relation}"
                     + (f"; FVU on a sample of its passages: {notes.corpus_fvu:.4f}." if notes.corpus_fvu is not None
                        else "."))
    for name, value in (notes.figures or {}).items():
        lines.append(f"- {name}: {value}")
    lines += ["", "Made with clsr; retrieval figures by collection are in clsr's README (Results).", ""]
    return "\n".join(lines)


def sae_folder_or_converted(path: str | os.PathLike, workdir: str | os.PathLike) -> Path:
    """``path`` when it is a clsr SAE folder; a CSR model's conversion into ``workdir`` (:func:`convert_csr_model`)
    when it is a sentence-transformers folder whose last module is a ``SparseAutoEncoder``.

    Raises CsrModelError, one line saying what the folder holds, for anything else.
    """
    from clsr.sae.config import CONFIG_NAME

    path = Path(path)
    if (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file():
        return path
    if not is_sparse_encoder_folder(path):
        raise CsrModelError(f"{path} is neither a clsr SAE ({CONFIG_NAME} and {WEIGHTS_NAME}) nor a "
                            f"sentence-transformers CSR model ({MODULES_FILE}); {describe_folder(path)}")
    convert_csr_model(path, workdir)
    return Path(workdir)
