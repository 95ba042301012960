"""CSR (sentence-transformers' `CSRLoss`) against clsr's SAE trainer: same frozen MiniLM, same general-English data,
same step budget, then the leave-one-out transfer measurement of benchmarks/transfer.py on each collection.

    python benchmarks/csr_peer.py --dataset scifact --dataset nfcorpus --out benchmarks/results/csr-peer.json

Both trainers get 8,192 latents and K=128 (``--n-latents``, ``--k``), the same ``--steps`` of the same Adam
learning rate and warm-up, and the same number of vectors per step (``--batch-size``: clsr's batch of vectors, CSR's
batch of ``batch-size / 2`` (anchor, positive) pairs):

* **clsr**: `clsr.sae.train.Trainer` with the shipped SAE's recipe (FVU + AuxK + KL on reconstructed and on code
  dot products, Multi-TopK at 64), on passages, their sentences and spans, and the unjudged queries.
* **CSR**: sentence-transformers' ``SparseAutoEncoder`` module trained with its ``CSRLoss`` (reconstruction at K and
  4K, AuxK, and ``SparseMultipleNegativesRankingLoss`` on the codes), whose positives are the pseudo-queries clsr
  already draws: each sentence and span of a passage, paired with that passage. The module's input is the frozen
  MiniLM embedding, read from clsr's embedding cache: with the transformer frozen, this is what
  ``SparseEncoderTrainer`` optimises, without re-encoding the texts at every step. The trained module becomes a
  clsr SAE with its tied decoder (`clsr.sae.sentence_transformers.tied_sae`), as `clsr index --sae` imports one.

Then, per collection (never in the training data: general English only), each SAE **zero-shot** and **adapted**
(warm-started and trained on the collection's own passages, sentences and spans for ``--adapt-steps``: clsr by
`clsr.sae.adapt.adapt_to_corpus`, CSR by more `CSRLoss` steps on the collection's own pairs), measured as
benchmarks/transfer.py measures: FVU, sparse Lucene K=64/128, hybrid K=128 and CL-SR+BM25 (RRF), as ratios to dense
nDCG@10 in the same run, plus training wall time.

On a CPU, ``--passages`` and ``--steps`` scale the run down (equally for both trainers; the report says by how
much against the shipped SAE's 46,127 passages and ~9,800 steps). Encoding is MiniLM through torch fp32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from clsr.data import Document, load_corpus, load_qrels, load_topics, resolve
from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config
from clsr.sae.data import DataRecipe, random_spans, split_sentences

log = logging.getLogger("benchmarks.csr_peer")
HERE = Path(__file__).resolve().parent
SHIPPED = {"passages": 46127, "steps": 9800}  # the shipped SAE: 12 epochs of ~417k vectors at 512 a step


# -- data -------------------------------------------------------------------------------------------------------------

def general_english_slice(passages: int, queries: int, folder: Path) -> Path:
    """The first ``passages`` passages and ``queries`` unjudged queries of general-english, as a BEIR folder."""
    return corpus_slice(resolve("general-english"), passages, folder, queries)


def corpus_slice(source: Path, passages: int, folder: Path, queries: int = 0) -> Path:
    """The first ``passages`` passages (and ``queries`` queries) of a BEIR folder, as a BEIR folder: the text an
    adaptation is given when the run is scaled down (encoding a collection's every sentence and span through
    torch fp32 takes longer on a CPU than both trainings)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(source / "corpus.jsonl", encoding="utf-8") as f, open(folder / "corpus.jsonl", "w") as out:
        for _, line in zip(range(passages), f):
            out.write(line)
    with open(source / "queries.jsonl", encoding="utf-8") as f, open(folder / "queries.jsonl", "w") as out:
        for _, line in zip(range(queries), f):
            out.write(line)
    return folder


def pseudo_pairs(source, encoder: DenseEncoder, recipe: DataRecipe | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(anchors, positives): each sentence and span of a passage with that passage, as embeddings.

    The texts are built as `clsr.sae.data.build_training_data` builds them (same ids, same seeded spans), so
    the embedding cache serves the encodings clsr's training data already made.
    """
    recipe = recipe or DataRecipe()
    rng = np.random.default_rng(recipe.seed)
    documents = load_corpus(source)
    sentences = [Document(f"{d.id}#s{i}", s) for d in documents for i, s in enumerate(split_sentences(d.text))]
    spans = [Document(f"{d.id}#w{i}", s) for d in documents
             for i, s in enumerate(random_spans(d.text, rng, recipe.spans_per_doc))]
    row_of = {d.id: row for row, d in enumerate(documents)}
    doc_vectors = np.asarray(encode_corpus(encoder, documents, progress=False).embeddings)
    anchors, parents = [], []
    for texts, what in ((spans, "spans"), (sentences, "sentences")):
        if texts:
            anchors.append(np.asarray(encode_corpus(encoder, texts, progress=False, desc=what).embeddings))
            parents += [row_of[t.id.rpartition("#")[0]] for t in texts]
    return np.concatenate(anchors), doc_vectors[np.asarray(parents)]


# -- the CSR trainer ------------------------------------------------------------------------------------------------

class _ModuleAsModel(torch.nn.Module):
    """What CSRLoss calls ``model``: features in, the SparseAutoEncoder's outputs out."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, features):
        return self.module(dict(features))


def train_csr(anchors: np.ndarray, positives: np.ndarray, n_latents: int, k: int, steps: int, batch_size: int,
              lr: float, warmup: int, seed: int = 0, init=None) -> tuple[object, float, dict]:
    """A SparseAutoEncoder trained with CSRLoss on (anchor, positive) embedding pairs: (module, seconds, losses)."""
    from sentence_transformers.sparse_encoder.losses import CSRLoss
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder

    torch.manual_seed(seed)
    module = SparseAutoEncoder(input_dim=anchors.shape[1], hidden_dim=n_latents, k=k)
    if init is not None:
        module.load_state_dict(init.state_dict())
    module.train()
    loss_fn = CSRLoss(_ModuleAsModel(module))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(warmup, 1)))
    rng = np.random.default_rng(seed)
    pairs = max(batch_size // 2, 2)
    start, last = time.perf_counter(), {}
    for _ in range(steps):
        rows = rng.choice(len(anchors), min(pairs, len(anchors)), replace=False)
        features = [{"sentence_embedding": torch.from_numpy(np.asarray(anchors[rows], np.float32))},
                    {"sentence_embedding": torch.from_numpy(np.asarray(positives[rows], np.float32))}]
        losses = loss_fn(features, labels=None)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        last = {name: round(float(value.detach()), 5) for name, value in losses.items()}
    module.eval()
    return module, time.perf_counter() - start, last


def save_as_clsr_sae(module, encoder: DenseEncoder, output: Path, provenance: dict) -> Path:
    from clsr.sae.config import TrainingRecord
    from clsr.sae.sentence_transformers import tied_sae

    sae = tied_sae(module.state_dict(), module.k, encoder.config)
    sae.config = type(sae.config)(**{**sae.config.__dict__, "training": TrainingRecord(data=provenance)})
    sae.save_to_disk(output)
    return output


# -- the run --------------------------------------------------------------------------------------------------------

def train_both(args, encoder: DenseEncoder, work: Path) -> dict:
    from clsr.sae.config import TrainConfig
    from clsr.sae.data import build_training_data
    from clsr.sae.train import Trainer

    data_dir = general_english_slice(args.passages, args.queries, work / "general-english-slice")
    # The name keeps "general-english" in the provenance, so relation() says zero-shot on every collection measured.
    data, provenance = build_training_data([str(data_dir)], encoder, unjudged_queries=[str(data_dir)])
    provenance = {**provenance, "datasets": {"general-english": next(iter(provenance["datasets"].values()))}}
    lr = args.lr
    config = TrainConfig(n_latents=args.n_latents, k=args.k, batch_size=args.batch_size, epochs=10**6, lr=lr,
                         warmup_steps=args.warmup, kl_weight=0.1, kl_sparse_weight=0.3, multi_k=(args.k // 2,),
                         kl_queries=min(64, len(data.queries)), max_steps=args.steps)
    clsr_dir = work / "clsr-sae"
    start = time.perf_counter()
    Trainer(data, config, clsr_dir, encoder=encoder.config.to_dict(), provenance={"data": provenance}).fit(
        progress=False)
    clsr_seconds = time.perf_counter() - start

    anchors, positives = pseudo_pairs(str(data_dir), encoder)
    module, csr_seconds, losses = train_csr(anchors, positives, args.n_latents, args.k, args.steps, args.batch_size,
                                            lr, args.warmup)
    csr_dir = save_as_clsr_sae(module, encoder, work / "csr-sae", provenance)
    return {"clsr": {"path": clsr_dir, "seconds": clsr_seconds},
            "csr": {"path": csr_dir, "seconds": csr_seconds, "module": module, "last_losses": losses},
            "training_vectors": len(data.vectors), "csr_pairs": len(anchors)}


def adapt_csr(trained: dict, source: str, encoder: DenseEncoder, args, output: Path) -> tuple[Path, float]:
    """More CSRLoss steps, warm-started, on the collection's own sentence/span-passage pairs."""
    from clsr.sae.config import SaeConfig

    anchors, positives = pseudo_pairs(source, encoder)
    adapted, seconds, _ = train_csr(anchors, positives, args.n_latents, args.k, args.adapt_steps, args.batch_size,
                                    args.adapt_lr, warmup=20, init=trained["module"])
    base = SaeConfig.read(trained["path"])
    save_as_clsr_sae(adapted, encoder, output, {**(base.training.data or {}), "adapted_to": source})
    return output, seconds


def baselines_for(source: str, encoder: DenseEncoder, work: Path):
    from clsr.demo import Baselines
    from clsr.index import build_bm25_index, build_dense_index
    from clsr.index.manifest import MANIFEST_NAME

    documents = load_corpus(source)
    bm25_dir, dense_dir = work / "bm25", work / "dense-minilm-torch"
    if not (bm25_dir / MANIFEST_NAME).exists():
        build_bm25_index(documents, bm25_dir, source=source, overwrite=True)
    encoded = encode_corpus(encoder, documents, progress=False)
    if not (dense_dir / MANIFEST_NAME).exists():
        build_dense_index(encoded.ids, encoded.embeddings, dense_dir, encoder=encoder.config.to_dict(),
                          encoding=encoder.encoding, source=source, overwrite=True)
    return Baselines(source, documents, bm25_dir, dense_dir, encoder, encoded.docs_per_s, encoded.cached)


def measure_dataset(dataset: str, trained: dict, encoder: DenseEncoder, args, work: Path) -> dict:
    from transfer import PSEUDO_QUERIES, measure_sae, ndcg

    from clsr.fusion import pseudo_queries
    from clsr.sae.adapt import AdaptConfig, adapt_to_corpus
    from clsr.search import Bm25Searcher, DenseSearcher

    source = str(resolve(dataset))
    name = Path(source).name
    work = work / name
    baselines = baselines_for(source, encoder, work)
    topics, qrels = load_topics(source, args.split), load_qrels(source, args.split)
    dense = DenseSearcher(baselines.dense_dir, encoder=encoder)
    query_vectors = encoder.encode_queries(list(topics.values()))
    documents = dense.index.reconstruct_n(0, dense.index.ntotal)
    dense_ndcg = ndcg(dict(zip(topics, dense.search_vectors(query_vectors, 1000))), qrels)
    bm25 = Bm25Searcher(baselines.bm25_dir)
    pseudo = pseudo_queries(baselines.documents, PSEUDO_QUERIES, seed=0)
    bm25_runs = {"test": bm25.batch_search(topics, k=1000), "pseudo": bm25.batch_search(pseudo[0], k=1000)}
    common = dict(baselines=baselines, work=work, topics=topics, qrels=qrels, query_vectors=query_vectors,
                  documents=documents, pseudo=pseudo, real_tuning=None, bm25_runs=bm25_runs, dense_ndcg=dense_ndcg)
    rows = {}
    for trainer in ("clsr", "csr"):
        sae_path = trained[trainer]["path"]
        rows[f"{trainer}/zero-shot"] = {**measure_sae(f"{trainer}-zero-shot", sae_path, **common),
                                        "training_s": round(trained[trainer]["seconds"], 1)}
        if args.adapt_steps:
            # Both adapt on the same text: the collection's first --adapt-passages passages (all, when 0).
            own_text = (str(corpus_slice(Path(source), args.adapt_passages, work / "adaptation-text"))
                        if args.adapt_passages else source)
            if trainer == "clsr":
                _, report, _ = adapt_to_corpus(sae_path, own_text, encoder, work / "clsr-adapted",
                                               AdaptConfig(steps=args.adapt_steps, lr=args.adapt_lr,
                                                           batch_size=args.batch_size), progress=False)
                adapted, seconds = work / "clsr-adapted", report.seconds
            else:
                adapted, seconds = adapt_csr(trained["csr"], own_text, encoder, args, work / "csr-adapted")
            rows[f"{trainer}/adapted"] = {**measure_sae(f"{trainer}-adapted", adapted, **common),
                                          "adaptation_s": round(seconds, 1)}
    return {"dataset": name, "split": args.split, "queries": len(topics), "documents": len(baselines.documents),
            "dense_ndcg@10": dense_ndcg, "bm25_ndcg@10": ndcg(bm25_runs["test"], qrels), "rows": rows}


COLUMNS = (("fvu_docs", "FVU docs"), ("sparse_k64_x_dense", "sparse K=64"), ("sparse_k128_x_dense", "sparse K=128"),
           ("hybrid_k128_x_dense", "hybrid K=128"), ("clsr_bm25_rrf_x_dense", "CL-SR+BM25 RRF"))


def markdown(result: dict) -> str:
    scale = result["scale"]
    lines = ["# CSR (sentence-transformers CSRLoss) against clsr's trainer", "",
             f"Both on frozen all-MiniLM-L6-v2 (torch fp32), {result['n_latents']} latents, K={result['k']}, the same "
             f"{result['steps']} steps of Adam (lr {result['lr']}, {result['warmup']} warm-up steps) at "
             f"{result['batch_size']} vectors a step, on the first {result['passages']} general-English passages "
             f"({result['training_vectors']} clsr training vectors; {result['csr_pairs']} CSR sentence/span-passage "
             f"pairs). **Scaled down for a CPU, equally for both**: {scale['passages']:.1%} of the shipped SAE's "
             f"passages and {scale['steps']:.1%} of its steps. Adapted: {result['adapt_steps']} more steps on the "
             f"collection's own text (its first {result.get('adapt_passages') or 'all'} passages, their sentences "
             "and spans; lr " + str(result["adapt_lr"]) + "). Ratios to dense nDCG@10 in the same run; "
             "every row is zero-shot or adapted (no SAE saw the collection).", "",
             "| collection | trainer / SAE | " + " | ".join(title for _, title in COLUMNS)
             + " | train s | adapt s |", "|---" * (len(COLUMNS) + 4) + "|"]
    for collection in result["collections"]:
        for row_name, row in collection["rows"].items():
            cells = [f"{row[key]:.3f}" for key, _ in COLUMNS]
            lines.append(f"| {collection['dataset']} | {row_name} | " + " | ".join(cells)
                         + f" | {row.get('training_s', '–')} | {row.get('adaptation_s', '–')} |")
    lines += ["", "Absolute nDCG@10: " + "; ".join(f"{c['dataset']}: dense {c['dense_ndcg@10']}, BM25 "
                                                    f"{c['bm25_ndcg@10']}" for c in result["collections"]) + ".",
              "", f"Measured {result['measured']} on {result['machine']['cpu']} ({result['machine']['cores']} cores, "
              f"{result['cpu_kind']}); sentence-transformers {result['versions'].get('sentence-transformers')}, "
              f"torch {result['versions'].get('torch')}, clsr {result['versions'].get('clsr')}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    import sys

    sys.path.insert(0, str(HERE))
    from harness import machine_info, versions, write_report

    from clsr.cpu import cpu_kind

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--passages", type=int, default=600, help="general-English passages to train on")
    parser.add_argument("--queries", type=int, default=300, help="general-English unjudged queries to train on")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--adapt-steps", type=int, default=50, help="0: zero-shot only")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--n-latents", type=int, default=8192)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--adapt-lr", type=float, default=3e-4)
    parser.add_argument("--adapt-passages", type=int, default=600,
                        help="adapt on the collection's first N passages (their sentences and spans); 0: all")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--work", type=Path, default=HERE / "work" / "csr-peer")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    encoder = DenseEncoder(encoder_config("minilm"), backend="torch", dtype="fp32")
    args.work.mkdir(parents=True, exist_ok=True)
    trained = train_both(args, encoder, args.work)
    result = {
        "n_latents": args.n_latents, "k": args.k, "steps": args.steps, "adapt_steps": args.adapt_steps,
        "adapt_passages": args.adapt_passages,
        "batch_size": args.batch_size, "lr": args.lr, "adapt_lr": args.adapt_lr, "warmup": args.warmup,
        "passages": args.passages, "training_vectors": trained["training_vectors"], "csr_pairs": trained["csr_pairs"],
        "scale": {"passages": args.passages / SHIPPED["passages"], "steps": args.steps / SHIPPED["steps"]},
        "training_s": {"clsr": round(trained["clsr"]["seconds"], 1), "csr": round(trained["csr"]["seconds"], 1)},
        "csr_last_losses": trained["csr"]["last_losses"], "collections": [],
        "machine": machine_info(), "cpu_kind": cpu_kind(), "versions": {**versions(), **_st_version()}}
    for dataset in args.dataset:
        result["collections"].append(measure_dataset(dataset, trained, encoder, args, args.work))
        result["measured"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        write_report(json.loads(json.dumps(result, default=str)), args.out, markdown(result))
    return result


def _st_version() -> dict:
    from importlib.metadata import version

    return {"sentence-transformers": version("sentence-transformers")}


if __name__ == "__main__":
    main()
