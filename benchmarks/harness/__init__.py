"""The benchmark harness: options, child processes, output, results, report.

Benchmarks (one script each in `benchmarks/`, run as `python benchmarks/<name>.py`):

| script | measures |
| --- | --- |
| `overhead.py` | keras_dp.scope() + keras_dp data vs hand-written tf.distribute: step-time ratio |
| `scaling.py` | 1 worker vs 2 MultiWorkerMirroredStrategy workers vs MirroredStrategy over 2 virtual CPUs: tokens/s, efficiency, gradient all-reduce share |
| `dataio.py` | elements and bytes each of N = 1, 2, 4 input pipelines reads (vs DATA autoshard); input vs training throughput |
| `startup.py` | launch -> first finished step for 1 and 2 workers: TF import, cluster formation, tracing/compilation |
| `convergence.py` | the default `keras-dp train` run: validation bits/byte against time, baselines, 1 vs 2 workers |
| `gpu.py` | tokens/s and MFU of the `small` and `base` presets (XLA, bf16) on GPUs; CPU fallback |

`python benchmarks/run.py all` runs them all. Every benchmark prints the
machine (CPU, cores, load average), the versions, its configuration, its raw
measurements and the ratios; `results.json` in the output folder keeps all
of it, `summary.md` the headline figures, and `scaling.png` /
`convergence.png` the plots. The recorded figures are in
`benchmarks/RESULTS.md`.

The harness is not part of the installed package: the scripts put
`benchmarks/` on `sys.path` (Python does so for the script's folder) and
import `harness`, `keras_dp` comes from the installed (or PYTHONPATH) copy.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from typing import Dict, List, Optional, Sequence

from harness.common import BenchmarkError, BenchOptions, load_results, save_result, say

#: Benchmark name -> module (a script in `benchmarks/`), in the order `run.py all` runs them.
BENCHMARKS = {
    "overhead": "overhead",
    "scaling": "scaling",
    "data": "dataio",
    "startup": "startup",
    "convergence": "convergence",
    "gpu": "gpu",
}

__all__ = ["BENCHMARKS", "BenchOptions", "BenchmarkError", "main", "run_benchmarks"]


def _command(name: str, options: BenchOptions) -> str:
    parts = ["python", f"benchmarks/{BENCHMARKS[name]}.py"]
    if options.smoke:
        parts.append("--smoke")
    if options.rounds is not None:
        parts += ["--rounds", str(options.rounds)]
    if options.steps is not None:
        parts += ["--steps", str(options.steps)]
    parts += ["--out", options.out]
    return " ".join(shlex.quote(p) for p in parts)


def run_benchmarks(names: Sequence[str], options: BenchOptions) -> Dict[str, dict]:
    """Runs the named benchmarks in order, saving each one's result as it ends.

    Args:
        names: Benchmark names (keys of `BENCHMARKS`); `"all"` means every one.
        options: A `BenchOptions`.

    Returns:
        Each benchmark's result dict, by name.
    """
    from harness import machine, report

    chosen: List[str] = []
    for name in names:
        chosen.extend(BENCHMARKS if name == "all" else [name])
    results = {}
    for name in dict.fromkeys(chosen):
        module = importlib.import_module(BENCHMARKS[name])
        if options.wait_quiet > 0:
            machine.wait_until_quiet(options.quiet_load, options.wait_quiet, say)
        before = machine.machine_info()
        say("=" * 78)
        say(f"benchmark {name}{' (smoke: smallest configuration)' if options.smoke else ''}")
        say(machine.describe(before))
        say("-" * 78)
        started = time.time()
        data = module.run(options)
        after = machine.load_average()
        data.update(name=name, smoke=options.smoke, seconds=round(time.time() - started, 1),
                    machine=before, load_after=after, command=_command(name, options))
        path = save_result(options.out, name, data)
        say(f"-- {name} took {data['seconds']:.0f} s; load average now "
            f"{'/'.join(f'{v:.2f}' for v in after or [])}; raw results in {path}")
        results[name] = data
    everything = load_results(options.out)
    say(f"summary: {report.write_summary(everything, options.out)}")
    if options.plot:
        for path in report.write_plots(everything, options.out):
            say(f"plot: {path}")
    sys.stdout.flush()
    return results


def build_parser(names: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The flags every benchmark script takes (`names` given: the script runs those)."""
    parser = argparse.ArgumentParser(
        prog=f"benchmarks/{BENCHMARKS[names[0]]}.py" if names else "benchmarks/run.py",
        description="Measures keras_dp on this machine; prints the machine, the versions, "
                    "the configuration, the raw measurements and the ratios, and saves them "
                    "in --out (results.json, summary.md, PNG plots).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if names is None:
        parser.add_argument("names", nargs="+", metavar="BENCHMARK",
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
    return parser


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """A `BenchOptions` from parsed flags.

    Raises:
        ConfigError: naming the flag, for an unknown benchmark or a count below 1.
    """
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


def main(argv: Optional[Sequence[str]] = None, names: Optional[Sequence[str]] = None) -> int:
    """Parses the flags, runs the benchmarks; returns the exit status.

    Args:
        argv: The flags (default `sys.argv[1:]`).
        names: The benchmarks a script runs; None: the names come first in `argv`.

    Returns:
        0; 2 for a usage error, 1 when a benchmark could not measure (the
        message, without a traceback, on stderr).
    """
    from keras_dp.errors import KerasDPError

    parser = build_parser(names)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if names is not None:
        args.names = list(names)
    try:
        run_benchmarks(args.names, options_from_args(args))
    except KerasDPError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0
