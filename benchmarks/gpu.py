"""GPU: tokens/s and model FLOPs utilisation of the `small` and `base` presets.

    python benchmarks/gpu.py [--smoke] [--rounds N] [--steps N] [--out DIR] [--presets ...]

`benchmarks/gpu.sh` runs this script. On one GPU, with XLA
and bf16 (`mixed_bfloat16`), each preset is trained for a few dozen steps
three ways, each in a fresh process:

- plain Keras: no strategy, the hand-written tf.data pipeline
  (`harness.workload.handwritten_dataset_fn`), `model.fit`;
- keras_dp on 1 GPU: `keras_dp.scope()` (OneDeviceStrategy) and
  `keras_dp.data.text_dataset`;
- keras_dp on all GPUs, when there are several: `keras_dp.scope()`
  (MirroredStrategy), the same batch per GPU.

Model FLOPs utilisation (MFU) = model FLOPs per token x tokens/s / (peak
FLOP/s x GPUs), with model FLOPs per token = 6 x (matmul parameters,
including the tied output head) + 12 x layers x d_model x seq_len (attention
scores and weighted sum, forward + backward), no recomputation counted. The
peak is the GPU's dense bf16 tensor-core figure from `PEAK_TFLOPS` (by the
name TensorFlow reports) or `--peak-tflops`. A batch that does not fit is
halved until it does (reported). A multi-replica step that XLA cannot compile
(always so on CPU: no XLA kernels for the collectives) is measured without
XLA, and the table says so.

Without a GPU (or with a CPU-only TensorFlow) it runs its CPU fallback: the
`tiny` preset for a few steps, same code path, no MFU - so the script is
tested on machines without GPUs. Those figures are not GPU figures.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

from harness.common import (BenchmarkError, BenchOptions, ratio, run_children, say,
                                   table)

NAME = "gpu"

#: Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, by a substring of the
#: device name; the first match wins (order matters: "H100 PCIe" before "H100").
PEAK_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
    ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0),
]
#: Sequences per GPU by preset (halved on out-of-memory).
DEFAULT_BATCH = {"tiny": 32, "small": 32, "base": 8}


def peak_tflops(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a GPU named `device_name` (None when not in the table)."""
    for key, value in PEAK_TFLOPS:
        if key.lower() in (device_name or "").lower():
            return value
    return None


def model_flops_per_token(d_model: int, num_layers: int, seq_len: int, vocab_size: int,
                          mlp_ratio: int = 4) -> float:
    """Training FLOPs per token of a TransformerLM (see the module docstring)."""
    per_layer = 4 * d_model * d_model + 2 * mlp_ratio * d_model * d_model
    matmul_parameters = num_layers * per_layer + vocab_size * d_model
    return 6.0 * matmul_parameters + 12.0 * num_layers * d_model * seq_len


def settings(options: BenchOptions, gpu_count: int) -> Dict[str, Any]:
    extra = options.gpu or {}
    fallback = gpu_count == 0
    presets = extra.get("presets")
    presets = [p.strip() for p in presets.split(",")] if presets else \
        (["tiny"] if fallback else ["small", "base"])
    batch = {p: int(extra.get("batch_size") or DEFAULT_BATCH.get(p, 8)) for p in presets}
    config: Dict[str, Any] = {
        "presets": presets, "batch": batch, "fallback": fallback,
        "steps": options.pick("steps", 10 if fallback else 50, 2),
        "warmup_steps": 1 if options.smoke else 3, "xla": True,
        "precision": None if extra.get("precision") == "float32" else
        (extra.get("precision") or "mixed_bfloat16"),
        "peak_tflops": extra.get("peak_tflops"), "model": {}, "seq_len": None}
    if options.smoke:
        config.update(seq_len=32, batch={p: 4 for p in presets}, model=options.model())
    return config


def run(options: BenchOptions) -> Dict[str, Any]:
    from harness import machine

    gpus = machine.gpus()
    config = settings(options, len(gpus))
    if config["fallback"]:
        say("gpu: no NVIDIA GPU found (nvidia-smi): CPU fallback, preset(s) "
            f"{', '.join(config['presets'])}; these are NOT GPU figures and have no MFU")
    else:
        say(f"gpu: {len(gpus)} x {gpus[0]['name']}; presets {', '.join(config['presets'])}, "
            f"{config['precision'] or 'float32'}, XLA; {config['steps']} timed steps each")
    first = _first_visible_gpu()
    one_gpu = {} if config["fallback"] else {"CUDA_VISIBLE_DEVICES": first}
    variants = [("plain Keras, 1 GPU", "keras", one_gpu),
                ("keras_dp, 1 GPU", "keras_dp", one_gpu)]
    if len(gpus) > 1:
        variants.append((f"keras_dp, {len(gpus)} GPUs (MirroredStrategy)", "keras_dp", {}))
    if config["fallback"]:
        variants = [(label.replace("1 GPU", "CPU"), kind, env) for label, kind, env
                    in variants]
    rows, entries = [], []
    for label, kind, env in variants:
        child = run_children(__name__, dict(config, variant=kind), 1, options=options,
                             label=f"gpu-{kind}-{len(entries)}", env=env)[0]
        if not config["fallback"] and child["gpus_seen"] == 0:
            raise BenchmarkError(
                f"nvidia-smi lists {len(gpus)} GPU(s) but TensorFlow "
                f"{child['versions']['tensorflow']} sees none (a CPU-only build, or a CUDA "
                "driver it cannot use). Fix: pip install 'keras-dp[gpu]' (tensorflow[and-cuda]) "
                "and check `python -c \"import tensorflow as tf; "
                "print(tf.config.list_physical_devices('GPU'))\"`")
        if not entries:
            say(f"TensorFlow {child['versions']['tensorflow']}, CUDA "
                f"{child['versions']['cuda']}, cuDNN {child['versions']['cudnn']}")
        for preset_result in child["presets"]:
            peak = config["peak_tflops"] or peak_tflops(child["device"])
            devices = max(1, child["replicas"])
            flops = model_flops_per_token(**preset_result["shape"])
            mfu = None
            if peak and child["gpus_seen"]:
                mfu = preset_result["tokens_per_sec"] * flops / (peak * 1e12 * devices)
            entry = dict(preset_result, variant=label, kind=kind, device=child["device"],
                         replicas=child["replicas"], flops_per_token=flops,
                         peak_tflops=peak, mfu=mfu)
            entries.append(entry)
    for preset in config["presets"]:
        group = [e for e in entries if e["preset"] == preset]
        plain = next((e for e in group if e["kind"] == "keras"), None)
        for entry in group:
            entry["vs_plain_keras"] = ratio(entry["tokens_per_sec"] / entry["replicas"],
                                            plain["tokens_per_sec"]) if plain else None
            rows.append([preset, entry["variant"], entry["batch"], entry["seq_len"],
                         1000 * entry["step_median"], entry["tokens_per_sec"],
                         "n/a" if entry["mfu"] is None else f"{100 * entry['mfu']:.1f} %",
                         entry["vs_plain_keras"], entry["oom_retries"],
                         "on" if entry.get("xla", True) else "OFF"])
    say("")
    say(table(["preset", "run", "batch/device", "seq", "ms/step", "tokens/s", "MFU",
               "per device vs plain Keras", "OOM halvings", "XLA"], rows))
    device = entries[0]["device"] if entries else "n/a"
    peak = entries[0]["peak_tflops"] if entries else None
    say(f"device: {device}; peak for MFU: "
        f"{'n/a (pass --peak-tflops)' if peak is None else f'{peak:g} TFLOP/s dense bf16'}; "
        "model FLOPs per token = 6 x matmul parameters + 12 x layers x d_model x seq_len")
    return {"settings": config, "gpus": gpus, "results": entries}


def _first_visible_gpu() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return visible.split(",")[0].strip()
    return "0"


def child(config: Dict[str, Any]) -> Dict[str, Any]:
    import gc

    import keras
    import tensorflow as tf

    from harness import workload

    gpus = tf.config.list_physical_devices("GPU")
    build = tf.sysconfig.get_build_info()
    versions = {"tensorflow": tf.__version__, "cuda": build.get("cuda_version"),
                "cudnn": build.get("cudnn_version")}
    if not gpus and not config["fallback"]:
        return {"presets": [], "device": "CPU", "gpus_seen": 0, "replicas": 0,
                "versions": versions, "load": os.getloadavg()[0]}
    device = "CPU"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = details.get("device_name", "GPU")
        capability = details.get("compute_capability")
        if capability and capability[0] < 8 and config["precision"] == "mixed_bfloat16":
            print(f"benchmarks/gpu.py: {device} (compute capability {capability}) has no "
                  "bf16 tensor cores; --mixed-precision mixed_float16 suits it better",
                  flush=True)
    workload.set_seed(0)
    context = None
    if config["variant"] == "keras_dp":
        import keras_dp

        context = keras_dp.scope()
    replicas = context.num_replicas if context else 1
    tokens = workload.builtin_tokens()
    results: List[Dict[str, Any]] = []
    for preset in config["presets"]:
        batch = int(config["batch"][preset])
        retries = 0
        xla = bool(config["xla"])
        while True:
            try:
                results.append(_time_preset(dict(config, xla=xla), preset, batch, context,
                                            tokens, workload, tf))
                results[-1].update(oom_retries=retries, xla=xla)
                break
            except tf.errors.InvalidArgumentError as exc:
                # XLA cannot compile every multi-replica step (on CPU never: no XLA
                # kernels for the collectives). Measure without XLA and say so.
                if not (xla and replicas > 1 and _xla_failure(exc)):
                    raise
                xla = False
                print(f"benchmarks/gpu.py: XLA could not compile the {replicas}-replica "
                      f"step of {preset} ({_xla_reason(exc)}); measuring it without XLA",
                      flush=True)
            except (tf.errors.ResourceExhaustedError, tf.errors.InternalError) as exc:
                out_of_memory = isinstance(exc, tf.errors.ResourceExhaustedError) or \
                    "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower()
                if batch == 1 or not out_of_memory:
                    raise
                batch, retries = batch // 2, retries + 1
                print(f"benchmarks/gpu.py: {preset} ran out of memory; batch {batch} per "
                      "device", flush=True)
            finally:
                if context is None:
                    keras.backend.clear_session()
                gc.collect()
    return {"presets": results, "device": device, "gpus_seen": len(gpus),
            "replicas": replicas, "versions": versions, "load": os.getloadavg()[0]}


def _xla_failure(exc) -> bool:
    """Whether `exc` says that XLA could not compile or place the step."""
    text = str(exc)
    return any(sign in text for sign in ("XLA", "xla", "tf2xla", "jit", "located in device"))


def _xla_reason(exc) -> str:
    """The most telling line of an XLA failure."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "unsupported" in line or "located in device" in line:
            return line[:200]
    return (lines or ["unknown error"])[0][:200]


def _time_preset(config, preset, batch, context, tokens, workload, tf) -> Dict[str, Any]:
    import statistics

    overrides = dict(config.get("model") or {})
    kwargs = dict(seq_len=config.get("seq_len"), dtype=config["precision"], xla=config["xla"],
                  **overrides)
    if context is not None:
        import keras_dp

        with context:
            model = workload.build_lm(preset, **kwargs)
        data = keras_dp.data.text_dataset("builtin", seq_len=model.seq_len,
                                          global_batch_size=context.global_batch(batch))
    else:
        model = workload.build_lm(preset, **kwargs)
        data = workload.handwritten_dataset_fn(tokens, model.seq_len, batch)(None)
    workload.timed_fit(model, data, int(config["warmup_steps"]) + 1)
    steps = workload.timed_fit(model, data, int(config["steps"]) + 1)
    step = statistics.median(steps)
    replicas = context.num_replicas if context is not None else 1
    result = {"preset": preset, "batch": batch, "seq_len": model.seq_len,
              "parameters": int(model.count_params()), "step_median": step,
              "steps_timed": len(steps),
              "tokens_per_sec": replicas * batch * model.seq_len / step,
              "shape": {"d_model": model.d_model, "num_layers": model.num_layers,
                        "seq_len": model.seq_len, "vocab_size": model.vocab_size,
                        "mlp_ratio": model.mlp_ratio}}
    del model, data
    return result


if __name__ == "__main__":
    from harness import main

    sys.exit(main(names=[NAME]))
