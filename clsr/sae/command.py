"""The SAE stage's commands: `clsr train-sae` and `clsr adapt-sae` (``python -m clsr.sae train-sae|adapt-sae``).
The work is in `clsr.sae.data` and `clsr.sae.train` (training) and `clsr.sae.adapt` (adaptation)."""

from __future__ import annotations

from clsr.options import (
    SOURCE_HELP,
    Command,
    adapt_config_from_args,
    add_adaptation_options,
    add_config_options,
    add_encoder_options,
    config_from_args,
    encoder_from_args,
)
from clsr.sae.adapt import KEPT_COSINE, AdaptationReport, adapt_to_corpus
from clsr.sae.config import TrainConfig
from clsr.sae.data import DataRecipe, build_training_data
from clsr.sae.model import TopKSae
from clsr.sae.train import Trainer


def _add_train_arguments(parser) -> None:
    parser.add_argument("--dataset", action="append", required=True, help=SOURCE_HELP + " (repeat for several)")
    parser.add_argument("--output", required=True, help="folder for sae.safetensors, config.json and checkpoint/")
    parser.add_argument("--train-split", action="append",
                        help="query split(s) to train on (default: every qrels split but dev, test, dev.small, "
                             "dl19, dl20; test-type splits are always refused)")
    # TrainConfig's fields, each declared once (type, default, help) in the dataclass; warm-up stays its default,
    # and the device comes from the encoder options.
    add_config_options(parser, TrainConfig, skip=("warmup_steps", "device"), short={"k": "-k"})
    parser.add_argument("--unjudged-queries", action="append", metavar="DATASET",
                        help="train on every query of this dataset's queries file (only for a folder without qrels, "
                             "e.g. general-english's unjudged questions)")
    add_config_options(parser, DataRecipe, skip=("seed",))  # the seed is TrainConfig's --seed
    parser.add_argument("--save-dtype", choices=["fp32", "fp16"], default="fp32", help="fp16 halves the file")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    add_encoder_options(parser)


def _run_train(args) -> None:
    import dataclasses

    import torch

    from clsr.data import resolve
    from clsr.index.atomic import SAE, check_replaceable

    # Before the encoding and training: the SAE's files go into --output (others there are kept).
    check_replaceable(args.output, SAE, {f"the dataset {d}": resolve(d) for d in args.dataset}, replaces=False)
    encoder = encoder_from_args(args)
    recipe = config_from_args(DataRecipe, args, seed=args.seed)
    query_splits = {dataset: args.train_split for dataset in args.dataset} if args.train_split else None
    data, provenance = build_training_data(args.dataset, encoder, recipe, query_splits,
                                           unjudged_queries=args.unjudged_queries or ())
    config = config_from_args(TrainConfig, args, device=args.device)
    print(f"training on {len(data.vectors)} vectors ({len(data.queries)} KL queries) from "
          f"{', '.join(map(str, args.dataset))}: {dataclasses.asdict(config)}")
    trainer = Trainer(data, config, args.output, encoder=encoder.config.to_dict(),
                      provenance={"data": provenance})
    if args.resume:
        trainer.resume()
    sae = trainer.fit(on_epoch=lambda epoch, summary: print(
        f"epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in summary.items())))
    if args.save_dtype == "fp16":
        sae.save_to_disk(args.output, dtype=torch.float16)
    print(f"saved the SAE to {args.output}")


TRAIN_COMMAND = Command(
    "train-sae",
    "Fit a top-K sparse autoencoder on a corpus's embeddings. Unsupervised, like fitting a PQ codebook on the "
    "corpus it will index: passages, their sentences and random spans, plus training queries (never test ones) "
    "for the retrieval KL terms.",
    _add_train_arguments, _run_train)


def print_adaptation(report: AdaptationReport, encode_seconds: float) -> None:
    print(f"adapted the SAE in {report.seconds:.0f} s (+{encode_seconds:.0f} s encoding): passage FVU "
          f"{report.fvu_before:.3f} -> {report.fvu_after:.3f}; {report.revived} latents dead on this corpus revived; "
          f"{report.kept}/{report.compared} base concepts ({report.kept_share:.0%}) kept their direction "
          f"(cosine > {KEPT_COSINE})")


def _add_adapt_arguments(parser) -> None:
    parser.add_argument("--corpus", required=True, help=SOURCE_HELP)
    parser.add_argument("--output", required=True, help="folder for the adapted sae.safetensors and config.json")
    parser.add_argument("--sae", help="SAE to start from (default: the bundled one)")
    add_adaptation_options(parser)
    add_encoder_options(parser, default_help="the encoder the SAE was trained on")


def _run_adapt(args) -> None:
    from clsr.data import resolve
    from clsr.encode.dense import EncoderConfig
    from clsr.index.atomic import SAE, check_replaceable
    from clsr.interpret.describe import inherit_descriptions
    from clsr.sae.model import sae_path_or_default

    base_path = sae_path_or_default(args.sae)
    check_replaceable(args.output, SAE, {"the corpus": resolve(args.corpus), "the SAE adapted": base_path},
                      replaces=False)
    trained_on = TopKSae.load_from_disk(base_path).config.encoder
    encoder = encoder_from_args(args, EncoderConfig.from_dict(trained_on) if trained_on else None)
    adapted, report, encode_seconds = adapt_to_corpus(base_path, str(resolve(args.corpus)), encoder, args.output,
                                                      adapt_config_from_args(args))
    print_adaptation(report, encode_seconds)
    print_inherited(inherit_descriptions(base_path, adapted, args.output, args.base_catalogue))
    print(f"saved the adapted SAE to {args.output}; index with it: clsr index --sae {args.output} ...")


def print_inherited(count: int) -> None:
    if count:
        print(f"{count} concepts keep their base description (decoder cosine above {KEPT_COSINE}), marked "
              "inherited until the corpus describes them")


ADAPT_COMMAND = Command(
    "adapt-sae",
    "Warm-starts from an SAE (default: the bundled one), revives latents that never fire on the corpus, and "
    "trains a fixed number of steps on the corpus's passages, sentences and random spans (spans stand in as the "
    "KL terms' queries). Concept ids keep their meaning where the corpus uses them. Never reads queries or qrels.",
    _add_adapt_arguments, _run_adapt)

COMMANDS = (TRAIN_COMMAND, ADAPT_COMMAND)
