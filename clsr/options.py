"""The command layer that every clsr command shares: the `Command` record, the runner that turns a failure
into one line on stderr, and each flag group that several commands take, beside the one function that
turns its parsed flags into the library's typed config (encoder, concept queries, steering, Ray, adaptation).

Each stage package owns its commands (``clsr/<stage>/command.py``: a `Command` with its parser and `run`)
and its ``python -m clsr.<stage>`` entry point; `clsr.cli` only dispatches. Library code never sees an
`argparse.Namespace`: only this module and the command modules read one. At module level this imports
nothing of clsr but its errors, so `clsr evaluate --help` loads no torch; the config types are imported
where a flag group is read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from clsr.errors import ClsrError, UsageError

if TYPE_CHECKING:
    from clsr.encode.dense import DenseEncoder, EncoderConfig
    from clsr.encode.ray import Shards
    from clsr.index.manifest import IndexManifest
    from clsr.sae.adapt import AdaptConfig
    from clsr.search.engines import EngineConfig

SOURCE_HELP = ("a BEIR folder, a collection name under $CLSR_DATA (e.g. scifact), a .jsonl/.tsv file, "
               "or an ir_datasets id (e.g. beir/scifact/test; needs the network)")


@dataclass(frozen=True)
class Command:
    """One subcommand: ``clsr NAME`` and ``python -m clsr.<module>`` build the same parser."""

    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def add_common_arguments(parser: argparse.ArgumentParser, subcommand: bool = False) -> None:
    """-v and --debug, taken before or after a subcommand's name (``subcommand``: leave the value given
    before it, since argparse would otherwise reset it to the default)."""
    default = argparse.SUPPRESS if subcommand else False
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log progress details")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an error, show the Python traceback instead of one line")


def build_parser(command: Command, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or f"clsr {command.name}", description=command.description)
    command.add_arguments(parser)
    add_common_arguments(parser)
    return parser


def execute(command: Command, args: argparse.Namespace) -> None:
    """Run a parsed command. Any failure becomes one line on stderr and a non-zero exit, unless --debug.

    Exit status: 1 for an error, 130 when interrupted (as a shell reports SIGINT).
    """
    args.command = command.name
    configure_logging(args.verbose)
    try:
        command.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"clsr {command.name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`clsr explain ... | head`): not an error of this command. As the Python docs
        # advise, stdout goes to devnull so that flushing it at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports a pipe writer cut short
    except ClsrError as e:
        if args.debug:
            raise
        fail(command.name, str(e))
    except Exception as e:  # a bug or an environment problem: still one line, with the way to see more
        if args.debug:
            raise
        fail(command.name, f"{type(e).__name__}: {e} (run again with --debug for the traceback)")


class _LogFormat(logging.Formatter):
    """clsr's own notes as ``clsr: message``; anything else, or any warning, as ``LEVEL logger: message``."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and record.name.startswith("clsr"):
            return f"clsr: {record.getMessage()}"
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def configure_logging(verbose: bool) -> None:
    """clsr's own notes (what was read, which split, rates at the end of a stage) always show on stderr;
    ``verbose`` adds every library's. Warnings always show."""
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("clsr").setLevel(logging.INFO)
    # faiss-cpu's loader notes at INFO that a per-ISA module (swigfaiss_avx2) is missing: recent wheels
    # dispatch by CPU inside one library and no longer ship those modules, so the note reads as a fault
    # that is not there. Its warnings and errors still show.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def fail(command_name: str, message: str) -> NoReturn:
    """``clsr NAME: error: MESSAGE`` as one line on stderr (a message's detail lines are joined), exit status 1."""
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    sys.exit(f"clsr {command_name}: error: {one_line}")


def main_for(command: Command, argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """The ``python -m clsr.<stage>`` entry point of a stage with one command."""
    parser = build_parser(command, prog)
    execute(command, parser.parse_args(argv))


def stage_main(commands: Sequence[Command], argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """``python -m clsr.<stage> COMMAND ...`` for a stage with several commands (sae, interpret)."""
    parser = argparse.ArgumentParser(prog=prog)
    add_common_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        subparser = subparsers.add_parser(command.name, help=command.description.split(". ")[0],
                                          description=command.description)
        command.add_arguments(subparser)
        add_common_arguments(subparser, subcommand=True)
    args = parser.parse_args(argv)
    execute(next(c for c in commands if c.name == args.command), args)


def add_encoder_options(parser: argparse.ArgumentParser, default_help: str = "minilm, bundled, works offline") -> None:
    """The dense encoder's flags; `encoder_config_from_args` and `encoder_from_args` read them."""
    group = parser.add_argument_group("dense encoder")
    group.add_argument("--encoder",
                       help=f"preset (minilm, bge), a local Hugging Face model folder, or a hub id "
                            f"(default: {default_help})")
    group.add_argument("--pooling", choices=["mean", "cls"], help="override the preset's pooling")
    group.add_argument("--query-prefix", help="text put before every query (bge's instruction for the bge preset)")
    group.add_argument("--max-length", type=int, help="tokens per text (preset default: 256 minilm, 512 bge)")
    group.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                       help="keep raw pooled vectors instead of L2-normalising them")
    group.add_argument("--dtype", choices=["auto", "bf16", "fp32"],
                       help="openvino and torch backends: auto = bf16 where the CPU has bf16 instructions "
                            "(about 2x faster, cosine 0.9999 to fp32), else fp32 ($CLSR_DTYPE pins what auto "
                            "means); default: the index's when searching, else auto")
    group.add_argument("--encoder-backend", choices=["auto", "openvino", "torch", "onnx", "onnx-int8"],
                       help="encoder runtime: openvino (OpenVINO, the fastest on CPUs), torch, onnx (ONNX Runtime, "
                            "fp32) or onnx-int8 (int8 matrix products, cosine ~0.995 to fp32); default: the index's "
                            "when searching, else auto = openvino on the CPU, torch on --device cuda "
                            "(docs/encoding-speed.md)")
    group.add_argument("--encode-batch-size", type=positive_int,
                       help="texts per encoder batch (default: 8 with openvino, 32 with the other backends)")
    group.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


_ENCODER_FLAGS = ("encoder", "pooling", "query_prefix", "max_length", "normalize")


def encoder_overridden(args) -> bool:
    """True when any flag of `add_encoder_options` that changes the vectors was given."""
    return any(getattr(args, name) is not None for name in _ENCODER_FLAGS)


def encoder_config_from_args(args, base: EncoderConfig | None = None) -> EncoderConfig:
    """The encoder the flags ask for: ``base`` (e.g. the SAE's or the index's) unless --encoder is given,
    with --pooling/--query-prefix/--max-length/--no-normalize applied on top."""
    import dataclasses

    from clsr.encode.dense import DEFAULT_PRESET, encoder_config
    config = base if (args.encoder is None and base is not None) else encoder_config(args.encoder or DEFAULT_PRESET)
    overrides = {"pooling": args.pooling, "query_prefix": args.query_prefix, "max_length": args.max_length,
                 "normalize": args.normalize}
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def encoder_from_args(args, base: EncoderConfig | None = None) -> DenseEncoder:
    """The DenseEncoder the flags of `add_encoder_options` ask for (backend: auto unless given)."""
    from clsr.encode.dense import DenseEncoder
    return DenseEncoder(encoder_config_from_args(args, base), device=args.device, dtype=args.dtype or "auto",
                        batch_size=args.encode_batch_size, backend=args.encoder_backend or "auto")


def add_concept_query_options(parser: argparse.ArgumentParser) -> None:
    """How queries of a concept index are encoded; `concept_encoder_options` reads them."""
    group = parser.add_argument_group("concept index queries")
    group.add_argument("--sae", help="SAE folder (default: the one the index was built with)")
    group.add_argument("--query-k", type=int, help="concepts per query (default: the index's, see its manifest)")
    group.add_argument("--query-mode", choices=["topk", "projected"],
                       help="topk: the query's own top-K code; projected: max(0, q . atom) on every concept, the K "
                            "largest kept (default: the index's)")
    group.add_argument("--force", action="store_true",
                       help="search even if the encoder or SAE differs from the one in the index's manifest")
    group.add_argument("--words-weight", type=float, metavar="W",
                       help="an index with words: their weight beside the concepts in the one query, each part "
                            "normalised by its score for a perfect match (default: the index's, recorded at build; "
                            "0: concepts only)")


def concept_encoder_options(args: argparse.Namespace, manifest: IndexManifest) -> dict:
    """Keyword options for `load_concept_encoder` (and so ClsrSearcher, ClsrQueryEncoder) from the flags of
    `add_concept_query_options` and `add_encoder_options`."""
    from clsr.encode.dense import EncoderConfig

    encoder = (encoder_config_from_args(args, EncoderConfig.from_dict(manifest.encoder))
               if encoder_overridden(args) else None)
    return {"encoder": encoder, "sae_path": args.sae, "query_k": args.query_k, "query_mode": args.query_mode,
            "words_weight": args.words_weight,
            "force": args.force, "device": args.device, "dtype": args.dtype,
            "batch_size": args.encode_batch_size,
            "backend": args.encoder_backend if args.encoder_backend != "auto" else None}


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Which engine serves a concept index's postings; `engine_config_from_args` reads them."""
    from clsr.search.engines import ENGINES, EngineConfig

    defaults = EngineConfig()
    group = parser.add_argument_group("engine (concept indexes; docs/concept-index.md, \"Engines\")")
    group.add_argument("--engine", choices=("auto", *ENGINES), default="auto",
                       help="auto (default): seismic when pyseismic-lsr is installed (clsr[engines]), else lucene; "
                            "lucene: Pyserini's LuceneImpactSearcher, exact; seismic or bmp: their candidates "
                            "rescored exactly by clsr, faster, with the recall docs/concept-index.md measures, "
                            "built into the index folder's engines/ on first use")
    group.add_argument("--engine-depth", type=int, default=defaults.depth,
                       help="candidates asked of seismic or bmp per query before exact rescoring, at least --hits "
                            "(default 0: --hits; more helps bmp, whose own ranking is approximate)")


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig | None:
    """None for Lucene (no other engine opened), else the EngineConfig the flags ask for."""
    from clsr.search.engines import EngineConfig, default_engine

    name = default_engine() if args.engine == "auto" else args.engine
    return None if name == "lucene" else EngineConfig(name, depth=args.engine_depth)


def add_steering_options(parser: argparse.ArgumentParser) -> None:
    """Concept steering; `steering_from_args` reads them."""
    group = parser.add_argument_group("steering (concept indexes)")
    group.add_argument("--boost", action="append", default=[], metavar="cID=FACTOR",
                       help="multiply a concept's query weight, e.g. c123=2.0 (a concept the query lacks is added "
                            "at its mean weight times FACTOR); repeatable")
    group.add_argument("--suppress", action="append", default=[], metavar="cID",
                       help="remove a concept from every query; repeatable")
    group.add_argument("--boost-concept", action="append", default=[], metavar="TEXT[=FACTOR]",
                       help='boost the concepts whose descriptions best match TEXT, e.g. "employment, salary=3" '
                            "(needs concepts.jsonl from clsr describe); prints which it picked")
    group.add_argument("--catalogue", help="concepts.jsonl (default: the index folder's)")


def steering_from_args(args) -> dict[int, float]:
    """{latent: factor} from the flags of `add_steering_options`; --boost-concept picks concepts
    by their descriptions in the index's catalogue and says which it picked on stderr.

    Raises UsageError for a malformed flag, a missing catalogue, or a text no description matches.
    """
    import sys

    from clsr.index.concepts import concept_latent, parse_steering
    from clsr.interpret.describe import load_catalogue, pick_concepts

    try:
        steering = parse_steering(args.boost, args.suppress)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.boost_concept:
        if args.catalogue:
            catalogue = load_catalogue(args.catalogue)
        elif getattr(args, "index", None):
            from clsr.interpret.describe import ensure_catalogue

            catalogue = ensure_catalogue(args.index, note=lambda text: print(f"note: {text}", file=sys.stderr))
        else:
            catalogue = {}
        if not catalogue:
            raise UsageError(f"--boost-concept needs concept descriptions; run `clsr describe --index {args.index}` "
                             "first, or pass --catalogue")
        for item in args.boost_concept:
            text, _, factor = item.rpartition("=") if "=" in item else (item, "", "")
            picked = pick_concepts(catalogue, text)
            if not picked:
                raise UsageError(f"no concept description matches {text!r}")
            for term, _ in picked:
                steering[concept_latent(term)] = float(factor) if factor else 2.0
            print(f"--boost-concept {text!r}: boosting " + ", ".join(
                f"{term} ({catalogue[term].description})" for term, _ in picked), file=sys.stderr)
    return steering


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """Encoding on Ray; `shards_from_args` reads them."""
    group = parser.add_argument_group("encoding on Ray (pip install 'clsr[ray]')")
    group.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="encode on Ray: a local instance with no ADDRESS, else the cluster at ADDRESS "
                            "(e.g. auto, ray://head:10001)")
    group.add_argument("--ray-workers", type=positive_int,
                       help="encoder actors, one CPU each (default: one per CPU of the Ray cluster)")
    group.add_argument("--shards", help="folder for the encoded shards (default: beside the output, *.shards)")


def shards_from_args(args: argparse.Namespace, source: str, encoder: EncoderConfig,
                     default_shards: str | os.PathLike, sae_path: str | os.PathLike | None = None,
                     doc_k: int | None = None) -> Shards:
    """Encode ``source`` on Ray as the flags of ``add_ray_options`` say; the shards, read back.

    ``encoder`` is the driver's ``EncoderConfig``; ``--encoder-backend`` and ``--dtype`` auto are resolved
    here, so that every actor, on whatever node, encodes alike; the shards' ``meta["encoding"]`` records them.
    """
    from pathlib import Path

    from clsr.encode.dense import resolve_encoding
    from clsr.encode.ray import encode_with_ray, read_shards

    backend, dtype = resolve_encoding(args.encoder_backend or "auto", args.dtype, args.device)
    directory = Path(args.shards or default_shards)
    meta = encode_with_ray(source, encoder.to_dict(), directory, address=args.ray, workers=args.ray_workers,
                           backend=backend, dtype=dtype, batch_size=args.encode_batch_size, sae_path=sae_path,
                           doc_k=doc_k)
    print(f"encoded {meta['documents']} passages on Ray ({meta['workers']} workers, {meta['address']}) in "
          f"{meta['encode_s']:.0f} s ({meta['docs_per_s']:.1f} passages/s; Ray started in {meta['ray_start_s']:.1f} s)"
          f" into {meta['shards']} shards at {directory}")
    return read_shards(directory)


def add_milvus_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """Where a Milvus collection lives; `clsr.search.milvus` reads them."""
    group = parser.add_argument_group("Milvus (pip install 'clsr[milvus]')")
    group.add_argument("--uri", default="clsr-milvus.db", required=required,
                       help="a file path (Milvus Lite, embedded; default clsr-milvus.db) or a server address "
                            "such as http://localhost:19530")
    group.add_argument("--collection", default="clsr", help="collection name (default clsr)")


def add_adaptation_options(parser: argparse.ArgumentParser) -> None:
    """How `clsr adapt-sae` and `clsr index --adapt` fine-tune the SAE; `adapt_config_from_args` reads them.
    The defaults are `clsr.sae.adapt.AdaptConfig`'s."""
    from clsr.sae.adapt import AdaptConfig

    defaults = AdaptConfig()
    group = parser.add_argument_group("adaptation (fine-tuning the SAE on the corpus, no judgments)")
    group.add_argument("--adapt-steps", type=int, default=defaults.steps,
                       help=f"training steps of {defaults.batch_size} vectors (default {defaults.steps}: about 6 "
                            "minutes on 2 free CPU cores)")
    group.add_argument("--adapt-lr", type=float, default=defaults.lr,
                       help=f"Adam learning rate (default {defaults.lr})")
    group.add_argument("--no-revive", dest="revive", action="store_false",
                       help="keep latents that never fire on this corpus as they are (default: re-initialise "
                            "them on its worst-reconstructed vectors)")
    group.add_argument("--base-catalogue", metavar="CONCEPTS_JSONL",
                       help="descriptions of the base SAE's concepts (e.g. the concepts.jsonl of an index built with "
                            "it; default: the base SAE folder's, if any): concepts whose decoder direction stays "
                            "above cosine 0.9 keep them, marked inherited, until the corpus describes them")


def adapt_config_from_args(args: argparse.Namespace) -> AdaptConfig:
    from clsr.sae.adapt import AdaptConfig

    return AdaptConfig(steps=args.adapt_steps, lr=args.adapt_lr, revive=args.revive, device=args.device)


def positive_int(text: str) -> int:
    """argparse type for counts such as --hits: refused at parse time, not deep inside a search."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


__all__ = ["Command", "SOURCE_HELP", "UsageError", "add_common_arguments", "add_concept_query_options",
           "add_encoder_options", "add_steering_options", "build_parser", "execute", "fail", "main_for",
           "positive_int"]


# -- typed configs that generate their own flags (as EleutherAI/sparsify's): one declaration per setting ------

def add_config_options(parser, config_type, *, skip: Sequence[str] = (), short: dict[str, str] | None = None,
                       prefix: str = "") -> None:
    """One flag per field of the dataclass ``config_type``: ``--{prefix}{field-name}``, typed and defaulted by the
    field, helped by its ``metadata["help"]`` (the default is appended). ``skip``: fields set elsewhere (e.g.
    device, from the encoder options). ``short``: extra spellings, {field: "-k"}.

    Field types taken: int, float, str and bool (a default-True bool gets ``--no-{name}``), their ``| None``
    forms (no default shown), and ``tuple[int, ...]`` (the flag repeats). Raises TypeError for any other.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if field.name in skip:
            continue
        name = prefix + field.name.replace("_", "-")
        kind, optional = _flag_type(hints[field.name])
        help_text = field.metadata.get("help", "")
        shown = "" if field.default is None or field.default == () else f"default {field.default}"
        help_text = f"{help_text} ({shown})" if help_text and shown else help_text or shown
        flags = [f"--{name}", *([short[field.name]] if short and field.name in short else [])]
        dest = prefix.replace("-", "_") + field.name
        if kind is bool:
            flag = f"--no-{name}" if field.default else f"--{name}"
            parser.add_argument(flag, dest=dest, action="store_false" if field.default else "store_true",
                                help=field.metadata.get("help"))
        elif kind == "ints":
            parser.add_argument(*flags, dest=dest, type=int, action="append", help=help_text)
        else:
            parser.add_argument(*flags, dest=dest, type=kind, default=field.default, help=help_text)


def config_from_args(config_type, args: argparse.Namespace, *, prefix: str = "", **given):
    """The ``config_type`` the flags of :func:`add_config_options` ask for; ``given`` fields (those skipped
    there) come from elsewhere."""
    import dataclasses

    values = dict(given)
    for field in dataclasses.fields(config_type):
        dest = prefix.replace("-", "_") + field.name
        if field.name in values or not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        values[field.name] = tuple(value or ()) if isinstance(field.default, tuple) else value
    return config_type(**values)


def _flag_type(hint) -> tuple[object, bool]:
    """(int | float | str | bool | "ints", optional) for a field's type hint."""
    import types
    import typing

    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return _flag_type(inner)[0], True
    if typing.get_origin(hint) is tuple and args[:1] == (int,):
        return "ints", False
    if hint in (int, float, str, bool):
        return hint, False
    raise TypeError(f"no flag for a field of type {hint!r}")
