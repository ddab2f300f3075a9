"""`keras-dp train`: train the Transformer LM data-parallel (the main job; docs/train_job.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json


def _mixed(value: str):
    key = value.strip().lower().replace("-", "_")
    aliases = {"bf16": "mixed_bfloat16", "bfloat16": "mixed_bfloat16",
               "mixed_bfloat16": "mixed_bfloat16", "fp16": "mixed_float16",
               "float16": "mixed_float16", "mixed_float16": "mixed_float16",
               "off": None, "none": None, "float32": None, "fp32": None}
    if key not in aliases:
        raise argparse.ArgumentTypeError(
            f"{value!r}: use mixed_bfloat16 (bf16), mixed_float16 (fp16) or off")
    return aliases[key]


class _Removed(argparse.Action):
    """`--resume`: refused with what to do instead (backups resume by themselves)."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"{option_string} is gone: an interrupted run resumes from its backups by itself "
            "(run the same command again, with the same --output-dir / --backup-dir). A "
            "finished run is not continued: train again with the larger --steps, or load "
            "OUTPUT_DIR/model.keras with keras.saving.load_model and fit it further")


#: Options of `keras-dp train` that are not `TrainConfig` fields.
CLI_ONLY = ("json",)


def register(subparsers) -> None:
    from keras_dp.train import TrainConfig

    d = TrainConfig()
    parser = subparsers.add_parser(
        "train", help="train the Transformer LM data-parallel (the main job)",
        description="Train the Transformer LM data-parallel: run the same command on every "
                    "worker; run it again to continue an interrupted run from its last backup "
                    "(docs/train_job.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=d.data, metavar="SOURCE",
                      help="builtin, a text file/folder/glob, tfds:NAME, or synthetic[:opts]")
    data.add_argument("--data-dir", default=None, help="tensorflow-datasets data dir")
    data.add_argument("--cache-dir", default=None, help="where converted datasets go")
    data.add_argument("--text-feature", default=None, help="text feature of a tfds dataset")
    model = parser.add_argument_group("model")
    model.add_argument("--preset", default=d.preset, help="tiny, small or base")
    model.add_argument("--seq-len", type=int, default=None, help="tokens per sequence")
    model.add_argument("--d-model", type=int, default=None)
    model.add_argument("--num-layers", type=int, default=None)
    model.add_argument("--num-heads", type=int, default=None)
    model.add_argument("--dropout", type=float, default=None)
    length = parser.add_argument_group("length and batch").add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help=f"total optimizer steps (default {TrainConfig.DEFAULT_STEPS})")
    length.add_argument("--epochs", type=float, default=None, help="passes over the data")
    batch = parser.add_argument_group("batch").add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int, default=d.batch_size, help="per replica")
    batch.add_argument("--global-batch-size", type=int, default=None, help="over all replicas")
    opt = parser.add_argument_group("optimizer (AdamW)")
    opt.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float,
                     default=d.learning_rate, help="peak learning rate for --base-batch")
    opt.add_argument("--base-batch", type=int, default=d.base_batch)
    opt.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    opt.add_argument("--decay", default=d.decay, choices=["cosine", "linear", "constant"])
    opt.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay)
    clip = opt.add_mutually_exclusive_group()
    clip.add_argument("--clipnorm", type=float, default=d.clipnorm)
    clip.add_argument("--global-clipnorm", type=float, default=d.global_clipnorm)
    speed = parser.add_argument_group("speed")
    speed.add_argument("--mixed-precision", type=_mixed, default=None, metavar="POLICY",
                       help="bf16 or fp16")
    speed.add_argument("--xla", action=argparse.BooleanOptionalAction, default=d.xla)
    speed.add_argument("--steps-per-execution", type=int, default=d.steps_per_execution)
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default=d.output_dir)
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument("--resume", action=_Removed, dest="_removed_resume", nargs=0,
                     help=argparse.SUPPRESS)
    run.add_argument("--backup-every", type=int, default=d.backup_every, metavar="N")
    run.add_argument("--backup-dir", default=None, help="default OUTPUT_DIR/backup")
    run.add_argument("--keep-backups", type=int, default=d.keep_backups, metavar="K")
    run.add_argument("--backup", action=argparse.BooleanOptionalAction, default=d.backup)
    run.add_argument("--validate-every", type=int, default=None, help="default: 5 per run")
    run.add_argument("--val-steps", type=int, default=d.val_steps)
    run.add_argument("--strategy", default=d.strategy,
                     help="auto, mirrored, multi_worker_mirrored, one_device, default, tpu")
    run.add_argument("--cpu-replicas", type=int, default=None)
    run.add_argument("--progress", default=d.progress, choices=["auto", "rich", "plain", "none"])
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    sample = parser.add_argument_group("sample")
    sample.add_argument("--sample-tokens", type=int, default=d.sample_tokens)
    sample.add_argument("--prompt", default=d.prompt)
    sample.add_argument("--temperature", type=float, default=d.temperature)
    sample.add_argument("--top-k", type=int, default=d.top_k)
    parser.set_defaults(func=run_command)


def config_from_args(args):
    """The `TrainConfig` of parsed `keras-dp train` arguments (every field is a flag)."""
    from keras_dp.train import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def run_command(args) -> int:
    from keras_dp.train import format_report, train

    result = train(config_from_args(args))
    if result.output_dir is not None:  # the chief reports
        print(json.dumps(result.to_json(), indent=2) if args.json
              else format_report(result, args.prompt))
    return 0
