"""Benchmarks of keras_dp: what `keras-dp bench` runs.

| name | measures |
| --- | --- |
| `overhead` | keras_dp.scope() + keras_dp data vs hand-written tf.distribute: step-time ratio |
| `scaling` | 1 worker vs 2 MultiWorkerMirroredStrategy workers vs MirroredStrategy over 2 virtual CPUs: tokens/s, efficiency, gradient all-reduce share |
| `data` | elements and bytes each of N = 1, 2, 4 input pipelines reads (vs DATA autoshard); input vs training throughput |
| `startup` | launch -> first finished step for 1 and 2 workers: TF import, cluster formation, tracing/compilation |
| `convergence` | the default `keras-dp train` run: validation bits/byte against time, baselines, 1 vs 2 workers |
| `gpu` | tokens/s and MFU of the `small` and `base` presets (XLA, bf16) on GPUs; CPU fallback |

Every benchmark prints the machine (CPU, cores, load average), the versions,
its configuration, its raw measurements and the ratios; `results.json` in the
output folder keeps all of it, `summary.md` the headline figures, and
`scaling.png` / `convergence.png` the plots. The recorded figures are in
`benchmarks/RESULTS.md`.

Example:

```python
from keras_dp.bench import BenchOptions, run_benchmarks
run_benchmarks(["overhead"], BenchOptions(out="/tmp/bench", smoke=True))
```
"""

from __future__ import annotations

import importlib
import shlex
import sys
import time
from typing import Dict, List, Optional, Sequence

from keras_dp.bench.common import (BenchmarkError, BenchOptions, load_results, save_result,
                                   say)

#: Benchmark name -> module, in the order `keras-dp bench` runs them.
BENCHMARKS = {
    "overhead": "keras_dp.bench.overhead",
    "scaling": "keras_dp.bench.scaling",
    "data": "keras_dp.bench.dataio",
    "startup": "keras_dp.bench.startup",
    "convergence": "keras_dp.bench.convergence",
    "gpu": "keras_dp.bench.gpu",
}

__all__ = ["BENCHMARKS", "BenchOptions", "BenchmarkError", "run_benchmarks"]


def _command(name: str, options: BenchOptions) -> str:
    parts = ["keras-dp", "bench", name]
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
    from keras_dp.bench import machine

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
        say(f"keras-dp bench {name}{' (smoke: smallest configuration)' if options.smoke else ''}")
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
    from keras_dp.bench import report

    everything = load_results(options.out)
    written = report.write_summary(everything, options.out)
    say(f"summary: {written}")
    if options.plot:
        for path in report.write_plots(everything, options.out):
            say(f"plot: {path}")
    sys.stdout.flush()
    return results


def benchmark_names() -> List[str]:
    return list(BENCHMARKS)


def describe_options(options: Optional[BenchOptions] = None) -> str:
    options = options or BenchOptions()
    return ", ".join(f"{k}={v}" for k, v in vars(options).items())
