"""`clsr index` / ``python -m clsr.index``: build a concept, BM25 or dense index from a corpus.

It sits in its own module, above `clsr.index`'s builders, because a concept build ends by tuning
the hybrid's alpha (`clsr.fusion`), which searches the index it just built.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clsr.cpu import available_cores
from clsr.index import build_bm25_index, build_concept_index, build_dense_index
from clsr.index.atomic import ADAPTING
from clsr.index.concepts import QUERY_MODES
from clsr.index.mix import DEFAULT_NORMALIZATION, DEFAULT_WORDS_WEIGHT
from clsr.options import (
    SOURCE_HELP,
    Command,
    UsageError,
    add_encoder_options,
    add_ray_options,
    positive_int,
    shards_from_args,
)

if TYPE_CHECKING:
    from clsr.encode.embeddings import GivenEmbeddings


def _add_index_arguments(parser) -> None:
    from clsr.options import add_adaptation_options

    parser.add_argument("--corpus", required=True, help=SOURCE_HELP)
    parser.add_argument("--index", required=True, help="output index folder")
    parser.add_argument("--kind", choices=["concepts", "bm25", "dense"], default="concepts",
                        help="what to build (default concepts)")
    parser.add_argument("--embeddings", metavar="DIR",
                        help="index the embeddings in DIR instead of encoding the corpus (concept and dense kinds): "
                             "a folder `clsr encode --corpus ... --output DIR` wrote, e.g. on a GPU machine "
                             "(embeddings.npy, ids.txt, encoder.json); its ids must be the corpus's, in any order, "
                             "and its encoder the SAE's; the index records its encoder, backend and dtype")
    parser.add_argument("--threads", type=positive_int, default=available_cores(),
                        help="Lucene indexing threads (default: this machine's cores, here %(default)s); the "
                             "index's postings and scores do not depend on it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index")
    group = parser.add_argument_group("concept index")
    group.add_argument("--sae", help="SAE folder (default: the bundled one for all-MiniLM-L6-v2)")
    group.add_argument("--doc-k", type=int, help="concepts per passage (default: the SAE's trained k)")
    group.add_argument("--query-k", type=int, help="searchers' default concepts per query (default: the SAE's k)")
    group.add_argument("--query-mode", choices=list(QUERY_MODES), default="topk",
                       help="searchers' default query mode (default topk)")
    group.add_argument("--no-words", dest="words", action="store_false",
                       help="index the concepts alone (default: each passage's words too, with quantised BM25 "
                            "weights, in the same Lucene index, so one query scores both; docs/concept-index.md)")
    group.add_argument("--words-weight", type=float, default=None, metavar="W",
                       help="the words' weight beside the concepts that searchers use by default, each part "
                            f"normalised by its score for a perfect match (default {DEFAULT_WORDS_WEIGHT}, chosen on "
                            "SciFact, NFCorpus and MS MARCO tuning splits; 0 searches concepts only)")
    group.add_argument("--bits", type=int, default=8,
                       help="impact bits (default 8: impacts 1..255); more than 8 can overflow float32 scores")
    group.add_argument("--no-tune-alpha", dest="tune_alpha", action="store_false",
                       help="skip tuning the hybrid's alpha on pseudo-queries from the corpus after the build "
                            "(default: tune it, ~10-30 s, and record it in the manifest; no judgments are read)")
    group.add_argument("--no-describe", dest="describe", action="store_false",
                       help="skip describing the concepts after the build (default: describe every concept the "
                            "corpus uses with the evidence describer, ~5 minutes for SciFact on 2 cores, and keep "
                            "the catalogue in the index as concepts.jsonl; an index without one is described on "
                            "first use by serve, explain and search --boost-concept, or by clsr describe)")
    group.add_argument("--adapt", action="store_true",
                       help="adapt the SAE to this corpus first (as `clsr adapt-sae`) and keep it in the index's sae/")
    add_adaptation_options(parser)
    add_encoder_options(parser, default_help="the encoder the SAE was trained on")
    add_ray_options(parser)


def _run_index(args) -> None:
    with contextlib.ExitStack() as stack:
        _build_index(args, stack)


def _sae_folder(args, stack: contextlib.ExitStack) -> tuple[Path, bool]:
    """--sae (or the bundled SAE) as a clsr SAE folder: a sentence-transformers CSR model is converted first, into a
    hidden folder beside the index that lives as long as the build (its SAE is then kept inside the index).
    Returns (the folder, whether it was converted)."""
    from clsr.sae.model import sae_path_or_default
    from clsr.sae.sentence_transformers import is_sparse_encoder_folder, sae_folder_or_converted

    path = sae_path_or_default(args.sae)
    workdir = None
    if is_sparse_encoder_folder(path):
        target = Path(args.index).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        workdir = stack.enter_context(tempfile.TemporaryDirectory(
            prefix=f".{target.name}{ADAPTING}{os.getpid()}-", dir=target.parent))
    folder = sae_folder_or_converted(path, workdir)
    return folder, folder != path


def _build_index(args, stack: contextlib.ExitStack) -> None:
    import time

    from clsr.data import iter_corpus, load_corpus, resolve
    from clsr.encode.dense import EncoderConfig, encode_corpus
    from clsr.index.atomic import INDEX, check_replaceable
    from clsr.options import encoder_from_args

    started = time.perf_counter()
    source = str(resolve(args.corpus))
    # Refused before minutes of encoding or adaptation, not only when the build reaches the folder.
    check_replaceable(args.index, INDEX, {"the corpus": source, "the SAE": args.sae, "the embeddings": args.embeddings},
                      option="--index")
    if args.ray and (args.kind == "bm25" or args.adapt):
        raise UsageError(f"--ray encodes passages: {'--adapt' if args.adapt else 'a BM25 index'} does not use it")
    given = _given_embeddings(args) if args.embeddings else None
    shards_dir = Path(args.index).resolve().parent / (Path(args.index).name + ".shards")
    encoding_note = None  # passages/s, backend and dtype, said at the end of the build
    earlier: dict[str, float] = {}  # seconds of the stages before the index build (encoding, adaptation)
    if args.kind == "bm25":
        manifest = build_bm25_index(iter_corpus(source), args.index, source=source, threads=args.threads,
                                    overwrite=args.overwrite)
    elif args.kind == "dense" and given is not None:
        given = _in_corpus_order(given, [d.id for d in iter_corpus(source)], args, stack)
        encoding_note = f"{len(given.ids)} embeddings given in {args.embeddings}"
        manifest = build_dense_index(given.ids, given.embeddings, args.index, encoder=given.encoder,
                                     encoding=given.encoding, source=source, overwrite=args.overwrite)
    elif args.kind == "dense" and args.ray:
        from clsr.options import encoder_config_from_args

        config = encoder_config_from_args(args)
        shards = shards_from_args(args, source, config, shards_dir)
        manifest = build_dense_index(shards.ids, shards.embeddings, args.index, encoder=config.to_dict(),
                                     encoding=shards.meta["encoding"], source=source, overwrite=args.overwrite)
    elif args.kind == "dense":
        encoder = encoder_from_args(args)
        encoded = encode_corpus(encoder, load_corpus(source))
        encoding_note = encoding_summary(encoder, encoded)
        manifest = build_dense_index(encoded.ids, encoded.embeddings, args.index, encoder=encoder.config.to_dict(),
                                     encoding=encoder.encoding, source=source, overwrite=args.overwrite)
    elif args.ray:
        from clsr.options import encoder_config_from_args
        from clsr.sae.model import TopKSae

        sae_path, converted = _sae_folder(args, stack)
        sae = TopKSae.load_from_disk(sae_path)
        config = encoder_config_from_args(args, EncoderConfig.from_dict(sae.config.encoder)
                                          if sae.config.encoder else None)
        sae.check_encoder(config.to_dict())  # before encoding a whole corpus for nothing
        doc_k = sae.check_k(args.doc_k)
        # The actors encode and compute the codes; the build reads the shards, memory-mapped.
        stage = time.perf_counter()
        shards = shards_from_args(args, source, config, shards_dir, sae_path=sae_path, doc_k=doc_k)
        earlier["encode_s"] = time.perf_counter() - stage
        words = _words(args, _corpus_texts(source, shards.ids), config.max_length, earlier)
        manifest = build_concept_index(shards.ids, shards.embeddings, args.index, sae=sae, sae_path=sae_path,
                                       encoder=config.to_dict(), encoding=shards.meta["encoding"],
                                       doc_k=doc_k, query_k=args.query_k,
                                       query_mode=args.query_mode, bits=args.bits, source=source,
                                       threads=args.threads, overwrite=args.overwrite,
                                       codes=(shards.activations, shards.latents),
                                       embed_sae=converted, earlier_timings=earlier,
                                       finish=_finisher(args, source), **words)
    elif given is not None:
        from clsr.sae.model import TopKSae

        sae_path, converted = _sae_folder(args, stack)
        sae = TopKSae.load_from_disk(sae_path)
        given.check_sae(sae)
        # The corpus is streamed, never held: its ids first (the rows' order), then its texts for the words, then
        # the pseudo-queries' passages (`_finisher`).
        given = _in_corpus_order(given, [d.id for d in iter_corpus(source)], args, stack)
        encoding_note = f"{len(given.ids)} embeddings given in {args.embeddings}"
        words = _words(args, _corpus_texts(source, given.ids), given.encoder["max_length"], earlier)
        manifest = build_concept_index(given.ids, given.embeddings, args.index, sae=sae, sae_path=sae_path,
                                       encoder=given.encoder, encoding=given.encoding,
                                       doc_k=args.doc_k, query_k=args.query_k,
                                       query_mode=args.query_mode, bits=args.bits, source=source,
                                       threads=args.threads, overwrite=args.overwrite,
                                       embed_sae=converted, earlier_timings=earlier,
                                       finish=_finisher(args, source, given.embeddings), **words)
    else:
        from clsr.options import adapt_config_from_args
        from clsr.sae.adapt import adapt_to_corpus
        from clsr.sae.command import print_adaptation
        from clsr.sae.model import TopKSae

        sae_path, converted = _sae_folder(args, stack)
        sae = TopKSae.load_from_disk(sae_path)
        trained_on = EncoderConfig.from_dict(sae.config.encoder) if sae.config.encoder else None
        encoder = encoder_from_args(args, trained_on)
        sae.check_encoder(encoder.config.to_dict())  # before encoding a whole corpus for nothing
        documents = load_corpus(source)
        stage = time.perf_counter()
        encoded = encode_corpus(encoder, documents)
        earlier["encode_s"] = time.perf_counter() - stage
        encoding_note = encoding_summary(encoder, encoded)
        if args.adapt:
            target = Path(args.index).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            # Removed when this process ends by an exception or Ctrl-C; if it was killed, by the next build
            # of the same index, with a warning (atomic_directory: the pid in the name is no longer alive).
            adapted = stack.enter_context(tempfile.TemporaryDirectory(
                prefix=f".{target.name}{ADAPTING}{os.getpid()}-", dir=target.parent))
            base_path = sae_path
            stage = time.perf_counter()
            sae, report, encode_seconds = adapt_to_corpus(sae_path, source, encoder, adapted,
                                                          adapt_config_from_args(args))
            earlier["adapt_s"] = time.perf_counter() - stage
            print_adaptation(report, encode_seconds)
            from clsr.interpret.describe import inherit_descriptions
            from clsr.sae.command import print_inherited

            print_inherited(inherit_descriptions(base_path, sae, adapted, args.base_catalogue))
            sae_path = Path(adapted)
        words = _words(args, (d.text for d in documents), encoder.config.max_length, earlier)
        del documents  # encoding needed every text at once; the build and the finisher do not (`_finisher`)
        manifest = build_concept_index(encoded.ids, encoded.embeddings, args.index, sae=sae, sae_path=sae_path,
                                       encoder=encoder.config.to_dict(), encoding=encoder.encoding,
                                       doc_k=args.doc_k, query_k=args.query_k,
                                       query_mode=args.query_mode, bits=args.bits, source=source,
                                       threads=args.threads, overwrite=args.overwrite,
                                       embed_sae=args.adapt or converted, earlier_timings=earlier,
                                       finish=_finisher(args, source, encoded.embeddings), **words)
    seconds = time.perf_counter() - started
    stages = _stages_said(manifest.timings) if manifest.timings else ""
    print(f"built {args.kind} index of {manifest.documents} documents at {args.index} in {_duration(seconds)}"
          + (f" ({stages})" if stages else "") + (f"; encoding: {encoding_note}" if encoding_note else ""))


def _given_embeddings(args) -> GivenEmbeddings:
    """``--embeddings DIR`` read and checked against itself and the other flags (`read_embeddings`), before any
    long stage; the SAE's checks and the corpus's ids come later. Raises UsageError in one line."""
    from clsr.encode.embeddings import ENCODER_FILE, read_embeddings
    from clsr.options import encoder_overridden

    for conflict, why in ((args.kind == "bm25", "--kind bm25: a BM25 index has no embeddings"),
                          (args.ray, "--ray: it encodes the corpus, whose embeddings are given"),
                          (args.adapt, "--adapt: adapting encodes the corpus's own training vectors (adapt first, "
                                       "with `clsr adapt-sae`, and give --sae)")):
        if conflict:
            raise UsageError(f"--embeddings with {why}")
    given = read_embeddings(args.embeddings)
    if encoder_overridden(args):
        raise UsageError(f"--embeddings {args.embeddings}: its {ENCODER_FILE} says which encoder made them; leave out "
                         "--encoder, --pooling, --query-prefix, --max-length and --no-normalize")
    for flag, key in (("encoder_backend", "backend"), ("dtype", "dtype")):
        value = getattr(args, flag)
        if value not in (None, "auto") and value != given.encoding[key]:
            raise UsageError(f"--{flag.replace('_', '-')} {value}, but {given.folder / ENCODER_FILE} records {key} "
                             f"{given.encoding[key]}: the index records the embeddings' own; give that or none")
    return given


def _words(args, texts: Iterable[str], max_length: int, timings: dict[str, float]) -> dict:
    """`build_concept_index`'s word options: each passage's words weighed by BM25, ``texts`` in the index's order
    (read once: a generator streams them), with the default mix; none with --no-words. Adds the stage's seconds to
    ``timings``."""
    import time

    if not args.words:
        if args.words_weight:
            raise UsageError("--words-weight needs words in the index: leave out --no-words")
        return {}
    from clsr.index.lucene import BM25_B, BM25_K1
    from clsr.index.words import corpus_words

    if args.words_weight is not None and args.words_weight < 0:
        raise UsageError(f"--words-weight {args.words_weight}: give 0 (concepts only) or more")
    start = time.perf_counter()
    words = corpus_words(texts, BM25_K1, BM25_B, max_length)
    timings["words_s"] = time.perf_counter() - start
    weight = DEFAULT_WORDS_WEIGHT if args.words_weight is None else args.words_weight
    return {"words": words, "words_weight": weight, "normalization": DEFAULT_NORMALIZATION}


def _corpus_texts(source: str, ids: Sequence[str]) -> Iterator[str]:
    """The corpus's texts, streamed in its order, which must be ``ids``' (the embeddings' rows were put in it, and
    Ray's shards keep it); raises DataError, naming the passage, where the corpus says otherwise (it changed
    during the build)."""
    from clsr.data import DataError, iter_corpus

    row = -1
    for row, doc in enumerate(iter_corpus(source)):
        if row >= len(ids) or doc.id != ids[row]:
            expected = repr(ids[row]) if row < len(ids) else f"none (the index has {len(ids)} passages)"
            raise DataError(f"{source} changed during the build: its passage {row + 1} is {doc.id!r}, expected "
                            f"{expected}")
        yield doc.text
    if row + 1 != len(ids):
        raise DataError(f"{source} changed during the build: {row + 1} passages, not {len(ids)}")


def _in_corpus_order(given: GivenEmbeddings, corpus_ids: list[str], args, stack: contextlib.ExitStack
                     ) -> GivenEmbeddings:
    """``given`` with its rows in the corpus's order (`GivenEmbeddings.in_order`): its memory map as it is when they
    are already, else reordered a chunk at a time into a hidden folder beside the index that lives as long as the
    build (removed as `_sae_folder`'s is), so that no copy of all the rows is held."""
    if len(given.ids) != len(corpus_ids) or given.ids == corpus_ids:
        return given.in_order(corpus_ids)  # the same record, or UsageError naming what differs
    target = Path(args.index).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = stack.enter_context(tempfile.TemporaryDirectory(
        prefix=f".{target.name}{ADAPTING}{os.getpid()}-", dir=target.parent))
    return given.in_order(corpus_ids, scratch=scratch)


def _finisher(args, source: str, embeddings=None):
    """What a concept build does to the complete index before it is renamed into place (`build_concept_index`'s
    ``finish``): tune the hybrid's alpha on pseudo-queries, and describe the concepts, each unless switched off.
    Both read the corpus from ``source`` themselves: the pseudo-queries stream it (`clsr.fusion.pseudo_queries`:
    the same passages as from the loaded corpus), so no build holds every passage for them. ``embeddings`` (the
    passages', in the index's order, e.g. memory-mapped) go to the describer.
    Returns the function, which returns each stage's seconds."""
    import time

    def finish(building: Path) -> dict[str, float]:
        seconds = {}
        if args.tune_alpha:
            from clsr.fusion import tune_and_record_alpha

            start = time.perf_counter()
            # Queries as the index's searchers will encode them: its encoder, backend and dtype, this run's device.
            record = tune_and_record_alpha(building, source,
                                           device=args.device, dtype=args.dtype,
                                           batch_size=args.encode_batch_size)
            seconds["tune_alpha_s"] = time.perf_counter() - start
            print(f"hybrid alpha {record.alpha} (tuned on {record.tuned_on}, {record.metric} "
                  f"{record.curve[format(record.alpha, '.1f')]:.4f}; recorded in the manifest) in "
                  f"{_duration(seconds['tune_alpha_s'])}")
        if args.describe:
            from clsr.interpret.describe import CATALOGUE_NAME, describe_index

            start = time.perf_counter()
            entries = describe_index(building, corpus=source, embeddings=embeddings)
            seconds["describe_s"] = time.perf_counter() - start
            described = sum(1 for e in entries if e.description and not e.inherited)
            inherited = sum(1 for e in entries if e.inherited)
            used = sum(1 for e in entries if e.df > 0)
            print(f"described {described} of the {used} concepts the corpus uses in {_duration(seconds['describe_s'])}"
                  + (f" ({inherited} more inherited from the base SAE)" if inherited else "")
                  + f": {CATALOGUE_NAME} in the index")
        return seconds

    return finish


STAGE_NAMES = {"encode_s": "encoding", "adapt_s": "adapting the SAE", "words_s": "words", "concepts_s": "concepts",
               "write_s": "writing vectors", "lucene_s": "Lucene", "doc_codes_s": "doc_codes",
               "tune_alpha_s": "alpha tuning", "describe_s": "describing"}


def _stages_said(timings: dict[str, float]) -> str:
    """"encoding 95 s, Lucene 20 s, describing 5 min 5 s": the manifest's stage seconds, in build order."""
    return ", ".join(f"{STAGE_NAMES[name]} {_duration(timings[name])}" for name in STAGE_NAMES if name in timings)


def _duration(seconds: float) -> str:
    """"0.4 s", "95 s" or "5 min 12 s"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def encoding_summary(encoder, encoded) -> str:
    """What a build says of its encoding: the rate, backend, dtype and kind of CPU, or that the cache served it."""
    from clsr.encode.dense import describe_rate

    if encoded.cached:
        return (f"{len(encoded.ids)} embeddings from the cache (encoded earlier at {encoded.docs_per_s:.1f} "
                f"passages/s, {encoder.backend} {encoder.dtype})")
    return describe_rate(encoder, len(encoded.ids), len(encoded.ids) / max(encoded.docs_per_s, 1e-9))


COMMAND = Command("index", "Build a concept, BM25 or dense index atomically (in a hidden folder beside it, "
                           "renamed at the end); it gets a clsr-index.json manifest. A concept index is a Lucene "
                           "impact index of each passage's top-K SAE concepts (pseudo-terms c<id>).",
                  _add_index_arguments, _run_index)
