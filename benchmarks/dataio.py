"""Data: what each input pipeline reads, and input vs training throughput.

    python benchmarks/dataio.py [--smoke] [--rounds N] [--steps N] [--out DIR]

Part 1, elements and bytes read per pipeline. The builtin corpus is stored
the way a local text file is (`keras_dp/data/store.py`: a tfds dataset of
16 shard files per split). For N = 1, 2, 4 input pipelines, each pipeline is
built with the `tf.distribute.InputContext` that worker p of N gets and runs
for one epoch (as every worker would, in its own process):

- keras_dp (`keras_dp.data.text_dataset_fn`): the sequences it yields and
  the bytes it reads from disk;
- DATA autoshard (what `strategy.experimental_distribute_dataset` does when
  AUTO sharding falls back to DATA): the plain pipeline over the same files
  (`builder.as_dataset("train")` -> sequences -> global batches) sharded by
  TensorFlow's own `input_ops.auto_shard_dataset(..., policy DATA)`; the
  sequences it reads (counted before the shard) and keeps, and its bytes.

Bytes are what the process really read: the growth of `rchar` in
/proc/self/io (every read() and pread(), page cache included) while the
pipeline runs; tfds' in-memory autocache is off for both, as it is across
worker processes. Goal for keras_dp: 1/N of the single pipeline's elements
and bytes for each pipeline; DATA autoshard reads N x that (all of it, per
worker).

Part 2, throughput: the default job's input pipeline alone (in-memory
builtin corpus, 32 x 128 tokens per batch, one pipeline) against the
training step that consumes it (the `tiny` LM with XLA, same batch): tokens/s
of each and their ratio (> 1: the input is not the bottleneck).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List

from harness.common import BenchOptions, ratio, run_children, say, table

NAME = "data"


def settings(options: BenchOptions) -> Dict[str, Any]:
    smoke = options.smoke
    return {"pipelines": [1, 2, 4], "seq_len": 64 if smoke else 128,
            "batch": 16 if smoke else 32, "shards": 16, "input_batches": options.pick("steps", 300, 10),
            "train_steps": 3 if smoke else 30, "xla": not smoke, "preset": "tiny",
            "model": options.model()}


def run(options: BenchOptions) -> Dict[str, Any]:
    config = settings(options)
    say(f"data: builtin corpus stored as {config['shards']} tfds shard files per split; "
        f"global batch {config['batch']} x {config['seq_len']} tokens; one epoch per "
        f"pipeline")
    child = run_children(__name__, config, 1, options=options, label="data")[0]
    rows = []
    single = {r["kind"]: r for r in child["reads"] if r["pipelines"] == 1}
    for row in child["reads"]:
        base = single[row["kind"]]
        row["fraction_elements"] = ratio(row["elements_read"], base["elements_read"])
        row["fraction_bytes"] = ratio(row["bytes_read"], base["bytes_read"])
        rows.append([row["kind"], row["pipelines"], row["pipeline"], row["elements_read"],
                     row["elements_kept"], row["bytes_read"], row["fraction_elements"],
                     row["fraction_bytes"], ",".join(str(f) for f in row.get("files", []))
                     or "all"])
    say(table(["pipeline kind", "N", "p", "sequences read", "kept", "bytes read",
               "x elements (N=1)", "x bytes (N=1)", "shard files"], rows))
    summary = []
    for kind in ("keras_dp", "DATA autoshard"):
        for count in config["pipelines"]:
            group = [r for r in child["reads"] if r["kind"] == kind and r["pipelines"] == count]
            elements = sum(r["elements_read"] for r in group)
            total_bytes = sum(r["bytes_read"] for r in group)
            summary.append({
                "kind": kind, "pipelines": count,
                "per_pipeline_fraction_elements": max(r["fraction_elements"] for r in group),
                "per_pipeline_fraction_bytes": max(r["fraction_bytes"] for r in group),
                "total_elements_vs_one": ratio(elements, single[kind]["elements_read"]),
                "total_bytes_vs_one": ratio(total_bytes, single[kind]["bytes_read"])})
    say("")
    say(table(["pipeline kind", "N", "largest share per pipeline (elements)",
               "(bytes)", "all pipelines together (elements)", "(bytes)"],
              [[s["kind"], s["pipelines"], s["per_pipeline_fraction_elements"],
                s["per_pipeline_fraction_bytes"], s["total_elements_vs_one"],
                s["total_bytes_vs_one"]] for s in summary]))
    flow = child["throughput"]
    flow["ratio"] = ratio(flow["input_tokens_per_sec"], flow["train_tokens_per_sec"])
    say(f"\ninput pipeline alone: {flow['input_tokens_per_sec']:,.0f} tokens/s "
        f"({flow['input_batches']} batches of {flow['batch']} x {flow['seq_len']}); training "
        f"step: {flow['train_tokens_per_sec']:,.0f} tokens/s; input / training = "
        f"{flow['ratio']:.1f}x (load {child['load'][0]:.2f}->{child['load'][1]:.2f})")
    return {"settings": config, "reads": child["reads"], "summary": summary,
            "throughput": flow, "load": child["load"]}


def _rchar() -> int:
    try:
        with open("/proc/self/io", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _drain(dataset) -> int:
    """Runs `dataset` to its end; returns the rows (sequences) of all its elements."""
    import tensorflow as tf

    rows = 0
    for element in dataset:
        rows += int(tf.nest.flatten(element)[0].shape[0])
    return rows


def child(config: Dict[str, Any]) -> Dict[str, Any]:
    import shutil
    import tempfile
    import time

    import tensorflow as tf
    import tensorflow_datasets as tfds
    from tensorflow.python.distribute import input_ops

    from harness import workload
    from keras_dp.data import load_corpus, text_dataset_fn
    from keras_dp.data.store import write_store

    load_before = os.getloadavg()[0]
    seq_len, batch = int(config["seq_len"]), int(config["batch"])
    corpus = load_corpus("builtin")
    work = tempfile.mkdtemp(prefix="keras_dp_bench_data_")
    reads: List[Dict[str, Any]] = []
    try:
        stored = write_store(os.path.join(work, "builtin"), "builtin (stored)",
                             {s: corpus.tokens(s) for s in corpus.splits},
                             num_shards=int(config["shards"]), source={"kind": "bench"})
        fn = text_dataset_fn(stored, split="train", seq_len=seq_len, global_batch_size=batch,
                             repeat=False)
        counter = tf.Variable(0, dtype=tf.int64)

        def counted(sequence):
            counter.assign_add(1)
            return sequence

        def naive_dataset():
            read_config = tfds.ReadConfig(try_autocache=False)
            dataset = stored.builder.as_dataset(split="train", shuffle_files=False,
                                                read_config=read_config)
            dataset = (dataset.map(lambda example: example["tokens"]).unbatch()
                       .batch(seq_len + 1, drop_remainder=True).map(counted)
                       .batch(batch, drop_remainder=True))
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = \
                tf.data.experimental.AutoShardPolicy.DATA
            return dataset.with_options(options)

        _drain(fn(tf.distribute.InputContext()))  # warm-up: imports, first file opens
        for count in config["pipelines"]:
            for index in range(count):
                context = tf.distribute.InputContext(num_input_pipelines=count,
                                                     input_pipeline_id=index,
                                                     num_replicas_in_sync=count)
                before = _rchar()
                rows = _drain(fn(context))
                first, stop = fn.layout.pipeline_streams(index, count)
                begin, end = fn.layout.token_range(first, stop)
                files = sorted(int(name.rsplit("-", 3)[-3]) for name in
                               stored.files_for("train", begin, end))
                reads.append({"kind": "keras_dp", "pipelines": count, "pipeline": index,
                              "elements_read": rows, "elements_kept": rows,
                              "bytes_read": _rchar() - before, "tokens_held": end - begin,
                              "files": files})
                counter.assign(0)
                before = _rchar()
                kept = _drain(input_ops.auto_shard_dataset(naive_dataset(), count, index,
                                                           count))
                reads.append({"kind": "DATA autoshard", "pipelines": count, "pipeline": index,
                              "elements_read": int(counter.numpy()),
                              "elements_kept": kept,
                              "bytes_read": _rchar() - before})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # -- input vs training throughput (the default job's in-memory pipeline) --
    dataset = text_dataset_fn("builtin", seq_len=seq_len, global_batch_size=batch)(
        tf.distribute.InputContext())
    iterator = iter(dataset)
    for _ in range(5):
        next(iterator)
    started = time.perf_counter()
    for _ in range(int(config["input_batches"])):
        next(iterator)
    input_seconds = time.perf_counter() - started
    import keras_dp

    context = keras_dp.scope()
    with context:
        model = workload.build_lm(config["preset"], seq_len=seq_len, xla=config["xla"],
                            **config["model"])
    train_data = keras_dp.data.text_dataset("builtin", seq_len=seq_len,
                                            global_batch_size=batch)
    workload.timed_fit(model, train_data, 3)
    steps = workload.timed_fit(model, train_data, int(config["train_steps"]) + 1)
    step = sorted(steps)[len(steps) // 2]
    tokens = batch * seq_len
    return {"reads": reads, "load": [load_before, os.getloadavg()[0]],
            "throughput": {"input_batches": int(config["input_batches"]), "batch": batch,
                           "seq_len": seq_len,
                           "input_tokens_per_sec": int(config["input_batches"]) * tokens
                           / input_seconds,
                           "train_tokens_per_sec": tokens / step, "train_steps": len(steps)}}


if __name__ == "__main__":
    from harness import main

    sys.exit(main(names=[NAME]))
