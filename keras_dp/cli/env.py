"""`keras-dp env`: a readable report of what keras_dp detects here."""

from __future__ import annotations

import json
import os
import platform
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "env", help="report the detected cluster, devices, strategy and versions")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-devices", action="store_true",
                        help="skip the device listing (does not import TensorFlow)")
    parser.set_defaults(func=run)


def collect(with_devices: bool = True) -> dict:
    """The report as a dict."""
    from keras_dp import __version__
    from keras_dp.cluster import resolve_cluster
    from keras_dp.strategy import choose_kind, gpu_slice, requested_cpu_replicas, tpu_requested

    info = resolve_cluster()
    report = {
        "keras_dp": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cluster": {
            "source": info.source,
            "num_workers": info.num_workers,
            "workers": info.worker_addresses,
            "task_type": info.task_type if info.cluster else None,
            "task_index": info.task_index if info.cluster else None,
            "worker_index": info.worker_index,
            "is_chief": info.is_chief,
            "local_rank": info.local_rank,
            "local_size": info.local_size,
            "variables": dict(info.variables),
            "notes": list(info.notes),
            "tf_config": info.to_tf_config(),
        },
    }
    if with_devices:
        import tensorflow as tf
        import keras

        gpus = tf.config.list_physical_devices("GPU")
        chosen = gpu_slice(len(gpus), info.local_rank, info.local_size)
        used = len(gpus) if chosen is None else chosen[1] - chosen[0]
        build = tf.sysconfig.get_build_info()
        report["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__,
                              "cuda": build.get("cuda_version"),
                              "cudnn": build.get("cudnn_version")}
        from keras_dp import keras_fix
        from keras_dp.keras_fix import replica_xla

        report["keras_fix"] = keras_fix.describe()
        report["keras_layer"] = keras_fix.registry()
        try:
            xla_allowed = replica_xla.PART.name in keras_fix.enabled_parts()
        except Exception:  # noqa: BLE001 - a bad KERAS_DP_KERAS_FIX: the report still prints
            xla_allowed = False
        report["xla"] = replica_xla.describe(used, xla_allowed)
        report["devices"] = {
            "cpu": len(tf.config.list_physical_devices("CPU")),
            "gpu": [g.name for g in gpus],
            "gpu_used_by_this_process": used,
            "tpu": tpu_requested(None, os.environ),
        }
        try:
            kind, reason = choose_kind("auto", info, num_gpus=used,
                                       cpu_replicas=requested_cpu_replicas(os.environ),
                                       tpu=report["devices"]["tpu"])
            report["strategy"] = {"auto": kind, "reason": reason}
        except Exception as exc:  # the report should still print
            report["strategy"] = {"auto": None, "reason": str(exc)}
    return report


def format_report(report: dict) -> str:
    cluster = report["cluster"]
    lines = [f"keras_dp {report['keras_dp']}  (Python {report['python']}, {report['platform']})"]
    if "versions" in report:
        v = report["versions"]
        extra = f", CUDA {v['cuda']}, cuDNN {v['cudnn']}" if v.get("cuda") else ""
        lines.append(f"TensorFlow {v['tensorflow']}, Keras {v['keras']}{extra}")
    lines += ["", f"Cluster source : {cluster['source']}",
              f"Workers        : {cluster['num_workers']}"]
    for i, address in enumerate(cluster["workers"]):
        mark = "  <- this process" if i == cluster["worker_index"] else ""
        lines.append(f"  [{i}] {address}{mark}")
    if cluster["task_type"]:
        lines.append(f"This task      : {cluster['task_type']} {cluster['task_index']}"
                     f"{' (chief)' if cluster['is_chief'] else ''}, local process "
                     f"{cluster['local_rank']} of {cluster['local_size']} on its node")
    else:
        lines.append("This task      : the only worker (chief)")
    if cluster["variables"]:
        lines.append("Read from      : " + ", ".join(sorted(cluster["variables"])))
    for note in cluster["notes"]:
        lines.append(f"Note           : {note}")
    if "devices" in report:  # with strategy, keras_layer and xla
        d, s = report["devices"], report["strategy"]
        lines += ["", f"CPUs           : {d['cpu']} device(s)"]
        lines.append(f"GPUs           : {len(d['gpu'])}" + (
            f" ({d['gpu_used_by_this_process']} used by this process)" if d["gpu"] else ""))
        if d["tpu"] is not None:
            lines.append(f"TPU            : requested ({d['tpu'] or 'Colab'})")
        lines.append(f"Strategy (auto): {s['auto']}  ({s['reason']})")
        lines.append("Keras layer    : part (state; releases; upstream; switch)")
        for part in report["keras_layer"]:
            mark = "" if part["in_range"] else "  OUTSIDE THE TESTED RANGE"
            lines.append(f"  {part['name']:<22}{part['state']}; {part['versions']}; "
                         f"{part['upstream']}; {part['switch']}{mark}")
        lines.append(f"XLA            : {report['xla']}")
    lines += ["", "TF_CONFIG      : " + json.dumps(cluster["tf_config"], separators=(",", ":"))]
    return "\n".join(lines)


def run(args) -> int:
    report = collect(with_devices=not args.no_devices)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
