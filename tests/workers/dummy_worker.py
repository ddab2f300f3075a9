"""A TensorFlow-free worker for the launcher's unit tests.

Usage: dummy_worker.py MODE [ARG]. Prints its TF_CONFIG index and restart count, then:
  ok          exit 0
  fail        worker 1 exits 3 after printing "about to fail"
  fail-once   worker 1 exits 4 on the first launch only
  hang        worker 1 exits 5, the others sleep (ignoring SIGTERM) until killed
  preempt     sleep; on SIGTERM print it and exit 75
  peer        worker 0 exits 76 naming worker 1 (as keras_dp.fault prints it); 1 sleeps
  usage       worker 1 exits 2 (a configuration error)
  deaf        every worker ignores SIGTERM and sleeps 60 s
  stop-once   on the first launch worker 1 stops itself (SIGSTOP) and the others wait
              for it (sleep); on a restart every worker exits 0
"""

import json
import os
import signal
import sys
import time

config = json.loads(os.environ.get("TF_CONFIG") or "{}")
index = config.get("task", {}).get("index", 0)
restart = os.environ.get("KERAS_DP_RESTART_COUNT")
mode = sys.argv[1]
print(f"worker {index} of {len(config.get('cluster', {}).get('worker', [])) or 1}, "
      f"restart {restart}, replicas {os.environ.get('KERAS_DP_CPU_REPLICAS')}", flush=True)
print(f"stderr of {index}", file=sys.stderr, flush=True)

if mode == "fail" and index == 1:
    print("about to fail", flush=True)
    sys.exit(3)
if mode == "usage" and index == 1:
    sys.exit(2)
if mode == "fail-once" and index == 1 and restart == "0":
    sys.exit(4)
if mode == "hang":
    if index == 1:
        time.sleep(0.5)
        sys.exit(5)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
if mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("deaf", flush=True)
    time.sleep(60)
if mode == "stop-once" and restart == "0":
    if index == 1:
        os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(60)
if mode == "preempt":
    signal.signal(signal.SIGTERM, lambda *_: (print(f"SIGTERM {index}", flush=True),
                                              sys.exit(75)))
    print("ready", flush=True)
    time.sleep(60)
if mode == "peer":
    if index == 0:
        time.sleep(0.3)
        print("keras_dp: worker 0 stops because worker 1 (127.0.0.1:1) stopped sending "
              "heartbeats", file=sys.stderr, flush=True)
        sys.exit(76)
    time.sleep(60)
