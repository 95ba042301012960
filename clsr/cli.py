"""The `clsr` command line: it only dispatches. Each command belongs to its stage package's ``command``
module (``clsr/<stage>/command.py``), which ``python -m clsr.<stage>`` also runs; see `clsr.options`.

Only the chosen command's module is imported, so `clsr evaluate` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from clsr.options import add_common_arguments, execute

# name -> (module that owns it, the attribute holding its Command, one line for `clsr --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "index": ("clsr.index.command", "COMMAND", "build a concept, BM25 or dense index"),
    "search": ("clsr.search.command", "COMMAND", "search an index for a set of topics and write a run file"),
    "evaluate": ("clsr.evaluate.command", "COMMAND", "score a run file: nDCG@10, MRR@10, R@100, R@1000"),
    "fuse": ("clsr.fusion.command", "COMMAND", "fuse run files (interpolation or RRF), e.g. CL-SR with BM25"),
    "tune-alpha": ("clsr.fusion.command", "TUNE_ALPHA_COMMAND",
                   "pick the hybrid's alpha on a train or dev split (never test), or on pseudo-queries"),
    "tune-words-weight": ("clsr.fusion.command", "TUNE_WORDS_COMMAND",
                          "pick an index's words weight beside its concepts on a train or dev split"),
    "explain": ("clsr.interpret.command", "EXPLAIN_COMMAND",
                "why a document matched a query, concept by concept, down to words"),
    "describe": ("clsr.interpret.command", "DESCRIBE_COMMAND",
                 "catalogue and describe every concept of a concept index"),
    "serve": ("clsr.interpret.command", "SERVE_COMMAND",
              "the concept explorer: a local web page and JSON API over a concept index"),
    "encode": ("clsr.encode.command", "COMMAND", "encode a corpus or topics to embeddings.npy + ids.txt"),
    "encode-queries": ("clsr.search.command", "ENCODE_QUERIES_COMMAND",
                       "pre-encode topics for stock Pyserini (--impact --encoder FILE)"),
    "train-sae": ("clsr.sae.command", "TRAIN_COMMAND", "fit a top-K sparse autoencoder on a corpus's embeddings"),
    "adapt-sae": ("clsr.sae.command", "ADAPT_COMMAND", "fine-tune an SAE on a new corpus's own text (no judgments)"),
    "demo": ("clsr.demo", "COMMAND", "CL-SR, BM25 and dense side by side on a collection"),
    "export": ("clsr.search.command", "EXPORT_COMMAND",
               "export a concept index to Milvus (Lite or a server) or as a sentence-transformers SparseEncoder"),
}


def load_command(name: str):
    module, attribute, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), attribute)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The top-level parser; only the command named in ``argv`` gets its arguments (and its module loaded)."""
    parser = argparse.ArgumentParser(
        prog="clsr", description="Concept-Level Sparse Retrieval on Pyserini/Lucene: index passages as SAE concepts, "
                                "search, fuse, explain and steer, and evaluate.")
    add_common_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (_, _, help_line) in COMMANDS.items():
        if name == chosen:
            command = load_command(name)
            subparser = subparsers.add_parser(name, help=help_line, description=command.description)
            command.add_arguments(subparser)
            add_common_arguments(subparser, subcommand=True)
        else:
            subparsers.add_parser(name, help=help_line)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    execute(load_command(args.command), args)


if __name__ == "__main__":
    main()
