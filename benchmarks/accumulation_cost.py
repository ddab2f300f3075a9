"""Cost of Keras' gradient accumulation (keras_fix part `gradient_accumulation`) beside plain steps.

Trains the `tiny` LM of the default `keras-dp train` job (AdamW, no XLA: a
MirroredStrategy over logical CPUs cannot be XLA-compiled) twice in one
process, with the same micro-batch (BATCH sequences x 128 tokens per
replica): once with plain steps, once with `gradient_accumulation_steps=2`
(one optimizer update, and one all-reduce, every 2 micro-batches). The two
alternate in bursts (ABBA order) so the machine's load drifts alike on both;
the first step of each burst is not timed. Printed: micro-batch steps/s of
each and the ratio accumulation / plain, per replica count (1: TensorFlow's
default strategy; 2: `keras_dp.scope(cpu_replicas=2)`), and each burst
pair's ratio for the spread. Every replica count runs in a process of its
own (the CPU is split before TensorFlow starts).

    python benchmarks/accumulation_cost.py [--replicas 1,2] [--bursts 6] [--steps 21]
"""

import argparse
import json
import statistics
import subprocess
import sys

BATCH = 16        # sequences per replica and micro-batch
SEQ_LEN = 128


def child(replicas: int, bursts: int, steps: int) -> dict:
    import keras

    import keras_dp
    from harness import workload

    context = keras_dp.scope(cpu_replicas=replicas if replicas > 1 else None,
                             kind="auto" if replicas > 1 else "default")
    models = {}
    for name, accumulate in (("plain", None), ("accumulate_2", 2)):
        workload.set_seed(0)
        with context:
            model = workload.build_lm("tiny", seq_len=SEQ_LEN, xla=False)
            model.compile(optimizer=keras.optimizers.AdamW(
                1e-3, weight_decay=0.01, beta_2=0.99, gradient_accumulation_steps=accumulate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        data = keras_dp.data.text_dataset("builtin", seq_len=SEQ_LEN,
                                          global_batch_size=context.global_batch(BATCH))
        workload.timed_fit(model, data, 4)   # trace and warm up
        models[name] = (model, data)
    times = {name: [] for name in models}
    for burst in range(bursts):
        for name in (list(models) if burst % 2 == 0 else list(models)[::-1]):
            model, data = models[name]
            times[name].append(workload.timed_fit(model, data, steps))
    updates = int(models["accumulate_2"][0].optimizer.iterations.numpy())
    micro = int(models["accumulate_2"][0].optimizer._iterations.numpy())
    return {"replicas": context.num_replicas, "strategy": type(context.strategy).__name__,
            "times": times, "updates": updates, "micro_batches": micro}


def report(result: dict) -> None:
    def rate(bursts):   # micro-batch steps per second over all timed steps
        return sum(len(b) for b in bursts) / sum(sum(b) for b in bursts)

    plain, accumulated = result["times"]["plain"], result["times"]["accumulate_2"]
    pairs = [rate([a]) / rate([p]) for p, a in zip(plain, accumulated)]
    tokens = result["replicas"] * BATCH * SEQ_LEN
    print(f"\n{result['replicas']} replica(s), {result['strategy']}, {BATCH} x {SEQ_LEN} "
          f"tokens per replica and micro-batch ({tokens} per micro-batch step); the "
          f"accumulating optimizer made {result['updates']} updates in "
          f"{result['micro_batches']} micro-batches")
    print("| steps | micro-batch steps/s | tokens/s | optimizer updates/s |")
    print("| --- | --- | --- | --- |")
    print(f"| plain | {rate(plain):.2f} | {rate(plain) * tokens:,.0f} | {rate(plain):.2f} |")
    print(f"| accumulation k=2 | {rate(accumulated):.2f} | {rate(accumulated) * tokens:,.0f} "
          f"| {rate(accumulated) / 2:.2f} |")
    print(f"ratio accumulation / plain (micro-batch steps/s): "
          f"{rate(accumulated) / rate(plain):.3f}; per burst pair "
          f"{min(pairs):.3f}..{max(pairs):.3f} (median {statistics.median(pairs):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--bursts", type=int, default=6)
    parser.add_argument("--steps", type=int, default=21, help="steps per burst (odd: the "
                        "first is not timed, so an even number of micro-batches is)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.bursts, args.steps)), flush=True)
        return
    for replicas in (int(r) for r in args.replicas.split(",")):
        run = subprocess.run([sys.executable, __file__, "--child", str(replicas),
                              "--bursts", str(args.bursts), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=False)
        line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
        if run.returncode or line is None:
            sys.exit(f"the {replicas}-replica run failed:\n{run.stderr[-3000:]}")
        report(json.loads(line[len("RESULT "):]))


if __name__ == "__main__":
    main()
