"""`keras-dp bench`: measure keras_dp on this machine.

Runs the benchmarks named (default: all) side by side in one run: overhead
against hand-written tf.distribute, scaling over workers and replicas, what
each input pipeline reads, start-up time, convergence of the default
`keras-dp train` run, and GPU throughput (CPU fallback without a GPU). Each
prints the machine, the versions, its configuration, its raw measurements and
the ratios, and saves them in `--out` (results.json, summary.md, PNG plots).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from keras_dp.bench import BENCHMARKS

    parser = subparsers.add_parser(
        "bench", help="benchmark keras_dp on this machine (overhead, scaling, data, ...)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="BENCHMARK", default=["all"],
                        help=f"which to run: all, {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", default="keras_dp_bench",
                        help="folder for results.json, summary.md, the plots and logs")
    parser.add_argument("--smoke", action="store_true",
                        help="smallest configuration (seconds; checks that each benchmark "
                             "runs, its figures mean nothing)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds / bursts of the compared runs "
                             "(default: per benchmark)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per burst (default: per benchmark); for "
                             "convergence and gpu: training steps")
    parser.add_argument("--no-plot", dest="plot", action="store_false",
                        help="do not write the PNG plots")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each benchmark wait up to this long for the 1-minute "
                             "load average to fall below --quiet-load")
    parser.add_argument("--quiet-load", type=float, default=0.3,
                        help="load average under which the machine counts as quiet")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds after which a benchmark's child process is stopped")
    parser.add_argument("--presets", default=None,
                        help="gpu: comma-separated presets (default small,base on GPUs, "
                             "tiny on the CPU fallback)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="gpu: sequences per GPU (default per preset)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="gpu: the GPU's peak dense bf16 TFLOP/s for MFU (default: "
                             "from a table of known GPUs)")
    parser.add_argument("--mixed-precision", default="mixed_bfloat16",
                        choices=["mixed_bfloat16", "mixed_float16", "float32"],
                        help="gpu: precision policy")
    parser.set_defaults(func=run)


def options_from_args(args):
    from keras_dp.bench import BENCHMARKS, BenchOptions
    from keras_dp.errors import ConfigError

    for name in args.names:
        if name != "all" and name not in BENCHMARKS:
            raise ConfigError("is not a benchmark", variable="BENCHMARK", received=name,
                              fix=f"use all or some of: {', '.join(BENCHMARKS)}")
    for flag in ("rounds", "steps", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError("must be a whole number >= 1",
                              variable=f"--{flag.replace('_', '-')}", received=value)
    return BenchOptions(out=args.out, smoke=args.smoke, rounds=args.rounds, steps=args.steps,
                        plot=args.plot, timeout=args.timeout, quiet_load=args.quiet_load,
                        wait_quiet=args.wait_quiet,
                        gpu={"presets": args.presets, "batch_size": args.batch_size,
                             "peak_tflops": args.peak_tflops,
                             "precision": args.mixed_precision})


def run(args) -> int:
    from keras_dp.bench import run_benchmarks

    run_benchmarks(args.names, options_from_args(args))
    return 0
