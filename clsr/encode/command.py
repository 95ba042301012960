"""`clsr encode` / ``python -m clsr.encode``: a corpus or topics to ``embeddings.npy`` + ``ids.txt`` +
``encoder.json`` (`clsr.encode.embeddings`: the folder `clsr index --embeddings` reads).

In one process through `clsr.encode.dense` (cached), or with ``--ray`` on Ray through `clsr.encode.ray`;
the command sits above both so that the imports run one way.
"""

from __future__ import annotations

from pathlib import Path

from clsr.encode.dense import encode_corpus
from clsr.encode.embeddings import write_embeddings
from clsr.options import (
    SOURCE_HELP,
    Command,
    UsageError,
    add_encoder_options,
    add_ray_options,
    encoder_config_from_args,
    encoder_from_args,
    shards_from_args,
)


def _add_encode_arguments(parser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--corpus", help=SOURCE_HELP)
    what.add_argument("--topics", help=SOURCE_HELP)
    parser.add_argument("--split", default="test", help="qrels split whose queries to encode (default test)")
    parser.add_argument("--output", required=True, help="folder for embeddings.npy, ids.txt and encoder.json")
    add_encoder_options(parser)
    add_ray_options(parser)


def _run_encode(args) -> None:
    from clsr.data import load_corpus, load_topics, resolve
    from clsr.index.atomic import EMBEDDINGS, check_replaceable

    # The files are written into the folder (others there are kept), so it may hold the user's files, but it must
    # be new, empty or an earlier `clsr encode` folder, and not the working folder or an input.
    output = Path(args.output)
    source = resolve(args.corpus or args.topics)
    check_replaceable(output, EMBEDDINGS, {"the corpus" if args.corpus else "the topics": source}, replaces=False)
    if args.ray:
        if args.topics:
            raise UsageError("--ray encodes corpora; topics are encoded in this process (drop --ray)")
        config = encoder_config_from_args(args)
        shards = shards_from_args(args, str(resolve(args.corpus)), config, output / "shards")
        # The shards' joined, memory-mapped file becomes embeddings.npy: no copy through memory.
        write_embeddings(output, shards.ids, Path(shards.embeddings.filename), config.to_dict(),
                         shards.meta["encoding"])
        print(f"wrote {len(shards.ids)} x {shards.embeddings.shape[1]} embeddings to {output}")
        return
    encoder = encoder_from_args(args)
    if args.topics:
        topics = load_topics(args.topics, args.split)
        ids, vectors = list(topics), encoder.encode_queries(list(topics.values()), progress=True)
    else:
        encoded = encode_corpus(encoder, load_corpus(args.corpus))
        ids, vectors = encoded.ids, encoded.embeddings
    write_embeddings(output, ids, vectors, encoder.config.to_dict(), encoder.encoding)
    print(f"wrote {len(ids)} x {vectors.shape[1]} embeddings to {output}")


COMMAND = Command("encode", "Dense-encode a corpus (cached) or a set of topics to embeddings.npy + ids.txt.",
                  _add_encode_arguments, _run_encode)
