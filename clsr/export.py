"""`clsr export milvus` / ``python -m clsr.export milvus``: a concept index's passages into a Milvus collection.

The work is `clsr.milvus.export_index`; this module is only its command.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .options import Command, add_milvus_options, main_for, positive_int

TARGETS = ("milvus",)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=TARGETS, help="where to export (milvus)")
    parser.add_argument("--index", required=True, help="a clsr concept index folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing collection (the old one stays searchable until the new one is "
                             "complete)")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="rows per insert (default 1000)")
    add_milvus_options(parser)


def _run(args: argparse.Namespace) -> None:
    from .milvus import export_index

    record = export_index(args.index, args.uri, args.collection, overwrite=args.overwrite,
                          batch_size=args.batch_size)
    print(f"exported {record['documents']} passages of {args.index} to Milvus collection {args.collection!r} at "
          f"{args.uri} in {record['export_seconds']:.1f} s")


COMMAND = Command("export", "Export a concept index to a served engine. milvus: each passage's docid, its concept "
                            "impacts (exactly the Lucene index's) as a sparse vector and its decoded embedding as a "
                            "dense vector, with the index's manifest; atomic (an interrupted export is never "
                            "searchable).", _add_arguments, _run)


def main(argv: Sequence[str] | None = None) -> None:
    main_for(COMMAND, argv, prog="python -m clsr.export")


if __name__ == "__main__":
    main()
