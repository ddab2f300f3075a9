"""`keras-dp train`: train the Transformer LM data-parallel (the main job; docs/train_job.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from keras_dp.cli._help import Formatter


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
        description="Train the Transformer LM data-parallel: run the same command on every\n"
                    "worker; run it again to continue an interrupted run from its last backup\n"
                    "(docs/train_job.md).",
        formatter_class=Formatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=d.data, metavar="SOURCE",
                      help="builtin, a text file/folder/glob, tfds:NAME, or synthetic[:opts]")
    data.add_argument("--data-dir", default=None, metavar="DIR",
                      help="tensorflow-datasets data dir (default: tfds' own)")
    data.add_argument("--cache-dir", default=None, metavar="DIR",
                      help="where converted datasets go (default: $KERAS_DP_CACHE_DIR or "
                           "~/.cache/keras_dp)")
    data.add_argument("--text-feature", default=None, metavar="NAME",
                      help="text feature of a tfds dataset (default: its only text feature)")
    model = parser.add_argument_group("model (--preset's sizes unless given)")
    model.add_argument("--preset", default=d.preset, help="tiny, small or base")
    model.add_argument("--seq-len", type=int, default=None, help="tokens per sequence")
    model.add_argument("--d-model", type=int, default=None, help="width")
    model.add_argument("--num-layers", type=int, default=None, help="transformer blocks")
    model.add_argument("--num-heads", type=int, default=None, help="attention heads")
    model.add_argument("--dropout", type=float, default=None, help="dropout rate")
    length = parser.add_argument_group("length").add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help=f"total optimizer steps (default: {TrainConfig.DEFAULT_STEPS})")
    length.add_argument("--epochs", type=float, default=None, help="passes over the data")
    batch = parser.add_argument_group("batch").add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int, default=d.batch_size, help="per replica")
    batch.add_argument("--global-batch-size", type=int, default=None,
                       help="over all replicas (keeps a run's trajectory on another number "
                            "of workers)")
    opt = parser.add_argument_group("optimizer (AdamW)")
    opt.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float,
                     default=d.learning_rate,
                     help="peak learning rate for --base-batch, scaled linearly to the "
                          "global batch")
    opt.add_argument("--base-batch", type=int, default=d.base_batch,
                     help="the global batch --lr is meant for")
    opt.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                     help="steps of linear warmup")
    opt.add_argument("--decay", default=d.decay, choices=["cosine", "linear", "constant"],
                     help="learning rate after warmup")
    opt.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio,
                     help="final learning rate / peak")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW's")
    clip = opt.add_mutually_exclusive_group()
    clip.add_argument("--clipnorm", type=float, default=d.clipnorm,
                      help="clip each gradient's norm (default: off)")
    clip.add_argument("--global-clipnorm", type=float, default=d.global_clipnorm,
                      help="clip the norm of all gradients together (default: off)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--mixed-precision", type=_mixed, default=None, metavar="POLICY",
                       help="bf16 or fp16 (default: off, float32)")
    speed.add_argument("--xla", action=argparse.BooleanOptionalAction, default=d.xla,
                       help="compile the step with XLA (default: on where TensorFlow can)")
    speed.add_argument("--steps-per-execution", type=int, default=d.steps_per_execution,
                       metavar="N", help="steps per call of the compiled function")
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default=d.output_dir, metavar="DIR",
                     help="model.keras, tokenizer.json and train_state.json go here")
    run.add_argument("--seed", type=int, default=d.seed, help="weights, data order, sampling")
    run.add_argument("--resume", action=_Removed, dest="_removed_resume", nargs=0,
                     help=argparse.SUPPRESS)
    run.add_argument("--backup-every", type=int, default=d.backup_every, metavar="N",
                     help="back up every N steps (an interrupted run resumes from it)")
    run.add_argument("--backup-dir", default=None, metavar="DIR",
                     help="where backups go (default: OUTPUT_DIR/backup)")
    run.add_argument("--keep-backups", type=int, default=d.keep_backups, metavar="K",
                     help="backups kept")
    run.add_argument("--backup", action=argparse.BooleanOptionalAction, default=d.backup,
                     help="back up and resume (default: on)")
    run.add_argument("--validate-every", type=int, default=None, metavar="N",
                     help="validate every N steps (default: 5 times per run)")
    run.add_argument("--val-steps", type=int, default=d.val_steps, metavar="N",
                     help="at most N validation batches")
    run.add_argument("--strategy", default=d.strategy,
                     help="auto, mirrored, multi_worker_mirrored, one_device, default, tpu")
    run.add_argument("--cpu-replicas", type=int, default=None, metavar="K",
                     help="K replicas on this process's CPU (default: $KERAS_DP_CPU_REPLICAS "
                          "or 1)")
    run.add_argument("--progress", default=d.progress, choices=["auto", "rich", "plain", "none"],
                     help="progress display; auto: rich on a terminal, plain lines otherwise")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    sample = parser.add_argument_group("sample (after training)")
    sample.add_argument("--sample-tokens", type=int, default=d.sample_tokens, metavar="N",
                        help="tokens to generate (0: none)")
    sample.add_argument("--prompt", default=d.prompt,
                        help=f"text the sample starts from (default: {d.prompt!r})")
    sample.add_argument("--temperature", type=float, default=d.temperature,
                        help="sampling temperature")
    sample.add_argument("--top-k", type=int, default=d.top_k, metavar="K",
                        help="sample from the K most likely tokens")
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
