"""Turns `results.json` into `summary.md` (headline figures) and the PNG plots.

Both are rebuilt from everything in `results.json` after each benchmark
run, so running the benchmarks one at a time gives the same files as
running them together. Plots need matplotlib (`pip install keras-dp[bench]`);
without it they are skipped with a note.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from harness.common import markdown_table, say


def _load(data: Dict[str, Any]) -> str:
    load = (data.get("machine") or {}).get("load_average")
    after = data.get("load_after")
    text = "/".join(f"{v:.2f}" for v in load) if load else "n/a"
    if after:
        text += f" -> {after[0]:.2f}"
    return text


def _header(name: str, data: Dict[str, Any]) -> List[str]:
    machine = data.get("machine") or {}
    smoke = " (smoke configuration: not a measurement)" if data.get("smoke") else ""
    return [f"## {name}{smoke}", "",
            f"`{data.get('command')}` - {machine.get('time')}, {machine.get('cpu')}, "
            f"{machine.get('usable_cores')} cores, load average (1/5/15 min) "
            f"{_load(data)}, {data.get('seconds')} s", ""]


def _overhead(data) -> List[str]:
    rows = [[r["replicas"], "on" if r.get("xla", True) else "off", r["strategy"],
             r["hand_strategy"], 1000 * r["keras_dp"]["median"],
             1000 * r["handwritten"]["median"], r["keras_dp"]["n"], f"{r['ratio']:.4f}",
             f"{min(r['burst_ratios']):.3f}..{max(r['burst_ratios']):.3f}"]
            for r in data["runs"]]
    return [markdown_table(["replicas", "XLA", "keras_dp", "hand-written", "keras_dp ms/step",
                            "hand ms/step", "steps each", "ratio hand/keras_dp",
                            "per burst pair"], rows)]


def _scaling(data) -> List[str]:
    rows = []
    base = next((c for c in data["configurations"] if c["name"] == "1 worker"), None)
    for c in data["configurations"]:
        # Efficiency round by round (each round against that round's baseline): the spread.
        per_round = [base_ms / ms for base_ms, ms in
                     zip(base.get("per_round_ms", []), c.get("per_round_ms", []))] if base else []
        spread = (f"{min(per_round):.2f}..{max(per_round):.2f}"
                  if per_round and c is not base else "")
        share_in = c.get("allreduce_share_in_step")
        share_alone = c.get("allreduce_share_alone")
        rounds = " / ".join(f"{v:.0f}" for v in c.get("per_round_ms", []))
        rows.append([c["name"], c["replicas"], 1000 * c["step"]["median"], rounds,
                     c["tokens_per_sec"], f"{c['efficiency']:.3f}", spread,
                     "n/a" if share_in is None else f"{100 * share_in:.1f} %",
                     "n/a" if share_alone is None else f"{100 * share_alone:.1f} %"])
    return [markdown_table(["configuration", "replicas", "ms/step", "ms/step by round",
                            "tokens/s", "efficiency", "efficiency by round",
                            "all-reduce share (in step)", "all-reduce share (alone)"], rows)]


def _data(data) -> List[str]:
    rows = [[s["kind"], s["pipelines"], f"{s['per_pipeline_fraction_elements']:.3f}",
             f"{s['per_pipeline_fraction_bytes']:.3f}", f"{s['total_elements_vs_one']:.2f}x",
             f"{s['total_bytes_vs_one']:.2f}x"] for s in data["summary"]]
    flow = data["throughput"]
    return [markdown_table(["pipelines", "N", "largest share of elements per pipeline",
                            "of bytes", "all pipelines: elements", "bytes"], rows), "",
            f"Input pipeline alone {flow['input_tokens_per_sec']:,.0f} tokens/s, training "
            f"{flow['train_tokens_per_sec']:,.0f} tokens/s: input / training = "
            f"{flow['ratio']:.1f}x."]


def _startup(data) -> List[str]:
    from startup import PHASES

    rows = []
    for key, entry in data["summary"].items():
        spread = (f"{entry['total_min']:.1f}..{entry['total_max']:.1f}"
                  if "total_min" in entry else "n/a")
        rows.append([entry.get("label", f"{key} worker(s)"),
                     *[f"{entry[p]:.2f}" for p in PHASES],
                     f"{entry['total']:.1f}", spread, f"{entry['second_step']:.3f}"])
    return [markdown_table(["launch", *PHASES, "total s", "total over rounds",
                            "2nd step s"], rows)]


def _convergence(data) -> List[str]:
    rows = []
    for key, run_ in data["runs"].items():
        at = run_["at_minutes"]
        rows.append([run_.get("label", f"{key} worker(s)"),
                     *["past end" if at[m] is None else f"{at[m]:.3f}"
                                             for m in ("1", "2", "3")],
                     f"{run_['final_val_bits']:.3f}", run_["steps"],
                     f"{run_['wall_seconds']:.0f}", run_["tokens_per_sec"]])
    base = data["baselines"]
    same = data["same_loss"]
    lines = [markdown_table(["run", "1 min", "2 min", "3 min", "end", "steps",
                             "launch -> end s", "tokens/s"], rows), "",
             f"Baselines: unigram {base['unigram']:.3f}, bigram {base['bigram']:.3f} "
             "bits/byte. "]
    if same.get("max_abs_diff_bits") is not None:
        pair = " vs ".join(data["runs"][k].get("label", k) for k in same.get("runs", ["2", "1"]))
        lines[-1] += (f"{pair} at the same step: largest difference "
                      f"{same['max_abs_diff_bits']:.2e} bits/byte. ")
    lines[-1] += f"Target (<= 2.0 bits/byte within 3 min): {'met' if data['target_met'] else 'not met'}."
    return lines


def _gpu(data) -> List[str]:
    rows = [[e["preset"], e["variant"], e["device"], e["batch"], e["tokens_per_sec"],
             "n/a" if e["mfu"] is None else f"{100 * e['mfu']:.1f} %",
             "n/a" if e.get("vs_plain_keras") is None else f"{e['vs_plain_keras']:.3f}"]
            for e in data["results"]]
    note = ["", "CPU fallback: not GPU figures."] if data["settings"].get("fallback") else []
    return [markdown_table(["preset", "run", "device", "batch/device", "tokens/s", "MFU",
                            "per device vs plain Keras"], rows)] + note


_SECTIONS = {"overhead": _overhead, "scaling": _scaling, "data": _data, "startup": _startup,
             "convergence": _convergence, "gpu": _gpu}


def write_summary(results: Dict[str, Any], out: str) -> str:
    """Writes `out/summary.md` with each benchmark's headline table; returns its path."""
    from harness import BENCHMARKS

    lines = ["# keras_dp benchmark summary", "",
             "Generated from results.json by the benchmark scripts (`benchmarks/`); raw measurements are there.", ""]
    benchmarks = results.get("benchmarks", {})
    for name in BENCHMARKS:
        if name in benchmarks:
            lines += _header(name, benchmarks[name]) + _SECTIONS[name](benchmarks[name]) + [""]
    path = os.path.join(out, "summary.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path


# -- plots -----------------------------------------------------------------------
def write_plots(results: Dict[str, Any], out: str) -> List[str]:
    """Writes `scaling.png` and `convergence.png` for the benchmarks in `results`."""
    benchmarks = results.get("benchmarks", {})
    wanted = [n for n in ("scaling", "convergence") if n in benchmarks]
    if not wanted:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("plots skipped: matplotlib is not installed (pip install 'keras-dp[bench]')")
        return []
    paths = []
    for name in wanted:
        figure = {"scaling": _plot_scaling, "convergence": _plot_convergence}[name](
            plt, benchmarks[name])
        path = os.path.join(out, f"{name}.png")
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def _subtitle(data) -> str:
    machine = data.get("machine") or {}
    load = (machine.get("load_average") or [float("nan")])[0]
    smoke = "SMOKE CONFIGURATION - " if data.get("smoke") else ""
    return (f"{smoke}{machine.get('cpu', '')}, {machine.get('usable_cores')} cores, "
            f"load {load:.2f}; TF {(machine.get('versions') or {}).get('tensorflow')}")


def _plot_scaling(plt, data):
    configs = data["configurations"]
    base = next(c for c in configs if c["name"] == "1 worker")["tokens_per_sec"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    names = [c["name"].replace(" (", "\n(").replace(", ", ",\n") for c in configs]
    rates = [c["tokens_per_sec"] for c in configs]
    ideal = [c["replicas"] * base for c in configs]
    positions = range(len(configs))
    left.bar(positions, ideal, color="none", edgecolor="grey", linestyle="--",
             label="ideal (replicas x 1 worker)")
    bars = left.bar(positions, rates, color=["#4c72b0" if not c.get("reference") else "#bbbbbb"
                                             for c in configs], label="measured")
    for bar, c in zip(bars, configs):
        left.annotate(f"{c['tokens_per_sec']:,.0f}\n{100 * c['efficiency']:.0f} %",
                      (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8)
    left.set_ylim(0, 1.3 * max(rates + ideal))
    left.set_xticks(list(positions), names, fontsize=8)
    left.set_ylabel("tokens/s (all replicas)")
    left.set_title("throughput and scaling efficiency")
    left.legend(fontsize=8, loc="upper left")
    multi = [c for c in configs if "no_comm_step" in c]
    labels = [c["name"].replace(" (", "\n(").replace(", ", ",\n") for c in multi]
    compute = [1000 * c["no_comm_step"]["median"] for c in multi]
    comm = [1000 * (c["step"]["median"] - c["no_comm_step"]["median"]) for c in multi]
    alone = [1000 * c["allreduce"]["median"] for c in multi]
    x = range(len(multi))
    right.bar(x, compute, label="step without gradient all-reduce", color="#55a868")
    right.bar(x, comm, bottom=compute, label="added by the all-reduce (in step)",
              color="#c44e52")
    right.scatter(x, alone, marker="_", s=900, color="black", zorder=3,
                  label="all-reduce timed alone")
    for i, c in enumerate(multi):
        right.annotate(f"{100 * c['allreduce_share_in_step']:.0f} % in step\n"
                       f"{100 * c['allreduce_share_alone']:.0f} % alone",
                       (i, compute[i] + comm[i]), ha="center", va="bottom", fontsize=8)
    if multi:
        right.set_ylim(0, 1.45 * max(a + b for a, b in zip(compute, comm)))
    right.set_xticks(list(x), labels, fontsize=8)
    right.set_ylabel("ms per step")
    right.set_title("share of the step in gradient all-reduce")
    right.legend(fontsize=8, loc="upper right")
    figure.suptitle(f"benchmarks/scaling.py - {_subtitle(data)}", fontsize=9)
    return figure


def _plot_convergence(plt, data):
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    base = data["baselines"]
    styles = {"1": ("#4c72b0", "o-"), "1 (no XLA)": ("#55a868", "s-"), "2": ("#dd8452", "x--")}
    for key, run_ in data["runs"].items():
        points = [p for p in run_["points"] if p["val_bits"] is not None]
        color, style = styles.get(key, (None, "o-"))
        name = run_.get("label", f"{key} worker(s)")
        left.plot([p["train_seconds"] / 60 for p in points], [p["val_bits"] for p in points],
                  style, color=color,
                  label=f"keras-dp train, {name} ({run_['tokens_per_sec']:,.0f} tokens/s)")
        right.plot([p["step"] for p in points], [p["val_bits"] for p in points], style,
                   color=color, label=name)
    reference = data.get("reference") or {}
    if reference:
        left.plot(reference["minutes"], reference["bits"], "s:", color="grey",
                  label=reference["label"])
    for axis in (left, right):
        axis.axhline(base["unigram"], color="#8172b2", linestyle="--", linewidth=1,
                     label=f"unigram {base['unigram']:.2f}")
        axis.axhline(base["bigram"], color="#937860", linestyle="--", linewidth=1,
                     label=f"bigram {base['bigram']:.2f}")
        axis.set_ylabel("validation bits/byte")
        axis.grid(alpha=0.3)
    left.axhline(2.0, color="red", linewidth=0.8, linestyle=":", label="target 2.0")
    left.axvline(3.0, color="red", linewidth=0.8, linestyle=":")
    left.set_xlabel("minutes of training (validation time excluded)")
    left.set_title("validation loss against time")
    right.set_xlabel("step")
    right.set_title("against the step: 1 vs 2 workers, same global batches")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.suptitle(f"benchmarks/convergence.py - {_subtitle(data)}", fontsize=9)
    return figure
