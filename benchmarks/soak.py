"""Kill anywhere: a soak of `keras-dp launch -n 2 --max-restarts 2 -- keras-dp train ...`.

Each trial launches the job (a small model, SOAK_STEPS steps, a backup every 3
steps, a validation every 4) through `benchmarks/fault_worker.py`, which
makes one random worker send itself one random signal (SIGKILL, SIGSTOP,
SIGTERM) at one random moment of the first launch attempt: during start-up,
mid-step, inside a backup write, at a validation, or in the last steps. A
trial passes when the launcher exits 0, the final weights equal the
uninterrupted run's (max abs diff <= 1e-5), and the launcher reacted within
60 s of the fault (restarted the workers, or finished).

Recovery time: from the fault to the first training step of the restarted
workers (or to the launcher's exit when no restart was needed). Detection:
from the fault to the launcher's "restarting" line.

    python benchmarks/soak.py --trials 3 --seed 1 [--out DIR] [--json FILE]

Run it in chunks under the CPU lock on a shared machine; every trial is
appended as one JSON line to --json (default OUT/trials.jsonl), so chunks
with different seeds accumulate; `--summary` prints the figures of all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "fault_worker.py")
STEPS, BACKUP_EVERY, VALIDATE_EVERY = 12, 3, 4
TRAIN = ["--steps", str(STEPS), "--backup-every", str(BACKUP_EVERY), "--validate-every",
         str(VALIDATE_EVERY), "--d-model", "32", "--num-layers", "1", "--num-heads", "2",
         "--seq-len", "32", "--global-batch-size", "8", "--no-xla", "--val-steps", "2",
         "--progress", "none", "--warmup-steps", "1", "--sample-tokens", "0"]
SIGNALS = ("SIGKILL", "SIGSTOP", "SIGTERM")
MOMENTS = ("start", "mid", "backup", "validation", "last")
#: The launcher must react (restart or finish) within this many seconds of the fault.
HANG_BOUND = 60.0


def pick_fault(rng: random.Random) -> Dict[str, str]:
    """A random worker, signal and moment (with its random parameters)."""
    moment = rng.choice(MOMENTS)
    if moment == "start":
        spec = f"start:{rng.uniform(0.3, 12.0):.2f}"
    elif moment == "mid":
        spec = f"mid:{rng.randint(1, STEPS - 2)}:{rng.randint(0, 150)}"
    elif moment == "backup":
        spec = f"backup:{rng.choice(range(BACKUP_EVERY, STEPS, BACKUP_EVERY))}"
    elif moment == "validation":
        spec = f"validation:{rng.choice(range(VALIDATE_EVERY, STEPS + 1, VALIDATE_EVERY))}"
    else:
        spec = rng.choice([f"step:{STEPS - 1}", f"mid:{STEPS - 1}:{rng.randint(0, 100)}",
                           f"step:{STEPS}"])
    return {"worker": str(rng.randint(0, 1)), "signal": rng.choice(SIGNALS),
            "moment": moment, "spec": spec}


def launch_command(out: str, fault: Optional[Dict[str, str]], restarts: int = 2) -> List[str]:
    command = [sys.executable, "-m", "keras_dp", "launch", "-n", "2", "--max-restarts",
               str(restarts), "--", sys.executable, WORKER]
    if fault:
        command += ["--fault", fault["worker"], "0", fault["spec"], fault["signal"]]
    return command + ["--", *TRAIN, "--output-dir", out]


class Watched:
    """A launcher process whose output lines are timestamped as they arrive."""

    def __init__(self, command: List[str]):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, env=env, start_new_session=True)
        self.lines: List = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return None
        finally:
            self.reader.join(10)

    def stop(self) -> None:
        """Ends the launch: two SIGTERMs (the second kills the workers), then SIGKILL."""
        for _ in range(2):
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                time.sleep(1)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def first(self, pattern: str, after: float = 0.0) -> Optional[float]:
        regex = re.compile(pattern)
        return next((when for when, line in self.lines if when >= after and regex.search(line)),
                    None)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def final_weights(out: str):
    import keras

    import keras_dp.models  # noqa: F401 - registers TransformerLM

    return keras.saving.load_model(os.path.join(out, "model.keras")).get_weights()


def reference(out: str):
    """The uninterrupted run's weights (run once, kept in OUT/reference)."""
    path = os.path.join(out, "reference")
    if not os.path.exists(os.path.join(path, "model.keras")):
        shutil.rmtree(path, ignore_errors=True)
        run = Watched(launch_command(path, None, restarts=0))
        if run.wait(600) != 0:
            sys.exit("the uninterrupted run failed:\n" + run.text()[-4000:])
    return final_weights(path)


def run_trial(out: str, fault: Dict[str, str], ref, timeout: float = 420) -> Dict:
    """One trial; returns its record (passed, times, the reason when it failed)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    run = Watched(launch_command(out, fault))
    try:
        code = run.wait(timeout)
    except KeyboardInterrupt:
        run.stop()
        raise
    text = run.text()
    record = {**fault, "exit": code, "seconds": round(time.time() - started, 1)}
    fault_at = run.first(r"^\[worker \d\] FAULT ")
    record["fired"] = fault_at is not None
    restart_at = run.first(r"\[launcher\] restarting all 2 workers")
    record["restarts"] = len(re.findall(r"\[launcher\] restarting all", text))
    record["stopped_worker_killed"] = "has been stopped (SIGSTOP)" in text
    reasons = []
    if fault_at is not None:
        if restart_at is not None:
            record["detection"] = round(restart_at - fault_at, 1)
            step = run.first(r"^\[worker 0\] STEP \d+ ", after=restart_at)
            record["recovery"] = round(step - fault_at, 1) if step else None
        else:
            ended = run.lines[-1][0] if run.lines else time.time()
            record["recovery"] = record["detection"] = round(ended - fault_at, 1)
        if (record.get("detection") or 0) > HANG_BOUND:
            reasons.append(f"reacted {record['detection']} s after the fault (> {HANG_BOUND})")
    if code != 0:
        reasons.append(f"exit {code}")
    else:
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(final_weights(out), ref))
        record["max_abs_diff"] = diff
        if diff > 1e-5:
            reasons.append(f"weights differ by {diff:.2e}")
    record["passed"] = not reasons
    if reasons:
        record["reasons"] = reasons
        record["tail"] = text.splitlines()[-60:]
    return record


def summary(records: List[Dict]) -> str:
    fired = [r for r in records if r["fired"]]
    passed = sum(r["passed"] for r in records)
    lines = [f"trials {len(records)}, passed {passed}, fault fired in {len(fired)}"]
    for key in ("detection", "recovery"):
        values = sorted(r[key] for r in fired if r.get(key) is not None)
        if values:
            pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
            lines.append(f"{key} (s): min {values[0]:.1f}, median {pick(0.5):.1f}, p90 "
                         f"{pick(0.9):.1f}, max {values[-1]:.1f} (n={len(values)})")
    for sig in SIGNALS:
        for moment in MOMENTS:
            group = [r for r in records if r["signal"] == sig and r["moment"] == moment]
            if group:
                rec = [r["recovery"] for r in group if r.get("recovery") is not None]
                lines.append(f"  {sig:7s} {moment:10s} {sum(r['passed'] for r in group)}/"
                             f"{len(group)} passed; recovery "
                             + (", ".join(f"{v:.0f}" for v in sorted(rec)) or "-") + " s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="keras_dp_soak")
    parser.add_argument("--json", default=None, help="default OUT/trials.jsonl")
    parser.add_argument("--summary", action="store_true", help="only print the figures")
    parser.add_argument("--fault", nargs=3, default=None, metavar=("WORKER", "SIGNAL", "MOMENT"),
                        help="one trial of this fault (e.g. 1 SIGSTOP start:5) instead of "
                             "random ones")
    args = parser.parse_args()
    results = args.json or os.path.join(args.out, "trials.jsonl")
    os.makedirs(args.out, exist_ok=True)
    if not args.summary:
        # A SIGTERM (e.g. `timeout`) ends the running launch and its workers too.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        ref = reference(args.out)
        rng = random.Random(args.seed)
        for trial in range(args.trials):
            fault = pick_fault(rng) if not args.fault else {
                "worker": args.fault[0], "signal": args.fault[1],
                "moment": args.fault[2].split(":")[0], "spec": args.fault[2]}
            record = run_trial(os.path.join(args.out, "trial"), fault, ref)
            record.update(seed=args.seed, trial=trial)
            with open(results, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"seed {args.seed} trial {trial}: worker {fault['worker']} {fault['signal']} "
                  f"at {fault['spec']}: {'PASS' if record['passed'] else 'FAIL'} "
                  f"(exit {record['exit']}, recovery {record.get('recovery')} s"
                  f"{', ' + '; '.join(record.get('reasons', [])) if not record['passed'] else ''})",
                  flush=True)
    with open(results, encoding="utf-8") as handle:
        print(summary([json.loads(line) for line in handle if line.strip()]))


if __name__ == "__main__":
    main()
