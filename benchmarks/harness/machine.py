"""The machine a benchmark ran on: CPU, cores, load, memory, GPUs and versions.

Every benchmark prints this with its figures: a number without the machine,
the load it ran under and the versions is not a result. Nothing here imports
TensorFlow (versions come from the installed distributions), so the parent
process of a benchmark stays light.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

#: Distributions whose versions every report lists (the first installed TF wins).
_TENSORFLOW = ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos")
_PACKAGES = ("keras", "keras-dp", "tensorflow-datasets", "numpy")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else `platform`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> List[int]:
    """The cores this process may run on (its affinity mask)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover
        return None


def memory_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def versions() -> Dict[str, Optional[str]]:
    """Python, TensorFlow (whichever build is installed), Keras, keras-dp, tfds, numpy."""
    found: Dict[str, Optional[str]] = {"python": sys.version.split()[0]}
    for name in _TENSORFLOW:
        try:
            found["tensorflow"] = f"{importlib.metadata.version(name)} ({name})"
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    else:
        found["tensorflow"] = None
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def gpus() -> List[Dict[str, str]]:
    """GPUs `nvidia-smi` reports (name, memory, driver); empty without NVIDIA GPUs."""
    tool = shutil.which("nvidia-smi")
    if not tool:
        return []
    try:
        out = subprocess.run(
            [tool, "--query-gpu=name,memory.total,driver_version",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return rows


def python_processes(exclude: Optional[List[int]] = None) -> int:
    """Other processes running a Python interpreter (a sign that the machine is shared)."""
    exclude = set(exclude or []) | {os.getpid(), os.getppid()}
    count = 0
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:  # pragma: no cover - not Linux
        return 0
    for pid in pids:
        if pid in exclude:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv0 = handle.read().split(b"\0")[0]
        except OSError:
            continue
        if os.path.basename(argv0).startswith(b"python"):
            count += 1
    return count


def machine_info() -> Dict[str, object]:
    """Everything above as one JSON-able dict, with the time it was taken."""
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(usable_cores()),
        "memory_gib": memory_gib(),
        "load_average": load_average(),
        "other_python_processes": python_processes(),
        "gpus": gpus(),
        "versions": versions(),
    }


def describe(info: Dict[str, object]) -> str:
    """The machine in three lines, for the top of every benchmark's output."""
    load = info.get("load_average")
    load_text = "/".join(f"{v:.2f}" for v in load) if load else "n/a"
    gpu_list = info.get("gpus") or []
    gpu_text = ", ".join(g["name"] for g in gpu_list) if gpu_list else "none"
    ver = info.get("versions", {})
    return (f"machine: {info['cpu']}; {info['usable_cores']} of {info['cores']} cores usable; "
            f"{info.get('memory_gib')} GiB; GPUs: {gpu_text}\n"
            f"load average (1/5/15 min): {load_text}; other Python processes: "
            f"{info.get('other_python_processes')}; {info['time']}\n"
            f"versions: Python {ver.get('python')}, TensorFlow {ver.get('tensorflow')}, "
            f"Keras {ver.get('keras')}, keras-dp {ver.get('keras-dp')}, "
            f"tensorflow-datasets {ver.get('tensorflow-datasets')}, numpy {ver.get('numpy')}")


def wait_until_quiet(threshold: float, timeout: float,
                     say: Callable[[str], None] = print, poll: float = 20.0) -> bool:
    """Waits (up to `timeout` s) until the 1-minute load average is below `threshold`.

    Returns:
        Whether the machine was quiet when the wait ended.
    """
    deadline = time.time() + max(0.0, timeout)
    announced = False
    while True:
        load = load_average()
        if load is None or load[0] < threshold:
            return True
        if time.time() >= deadline:
            say(f"the machine is still busy (1-minute load {load[0]:.2f} >= {threshold}); "
                "measuring anyway: compare these figures with care")
            return False
        if not announced:
            say(f"waiting for the 1-minute load average ({load[0]:.2f}) to fall below "
                f"{threshold} (at most {timeout:.0f} s)")
            announced = True
        time.sleep(min(poll, max(1.0, deadline - time.time())))
