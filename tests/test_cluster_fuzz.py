"""Fuzzing cluster resolution (issue 12, section 6): a cluster TensorFlow accepts, or a ClusterConfigError.

Seeded random mutations of valid TF_CONFIG, explicit, SLURM, MPI and
Kubernetes environments, in-process. Every mutation must either resolve to a
cluster whose TF_CONFIG TensorFlow's own `TFConfigClusterResolver` reads back
with the same task, or raise `ClusterConfigError`. Any other exception, or a
resolution slower than a second, is a bug (each one found is a case in
the tables of tests/test_cluster_*.py).
"""

import copy
import json
import os
import random
import re
import signal
import time
from collections import Counter


from keras_dp.cluster import ClusterInfo, resolve_cluster
from keras_dp.errors import ClusterConfigError

SEED = 20261201
PER_SOURCE = 1000

TF_CONFIGS = [
    {"cluster": {"chief": ["job-chief-0:2222"],
                 "worker": ["job-worker-0:2222", "job-worker-1:2222"]},
     "task": {"type": "worker", "index": 1}},
    {"cluster": {"worker": ["10.0.0.1:4000", "10.0.0.2:4000"]},
     "task": {"type": "worker", "index": 0}, "rpc_layer": "grpc"},
    {"cluster": {"chief": ["cmle-training-master-0:2222"],
                 "worker": ["cmle-training-worker-0:2222"]},
     "task": {"type": "chief", "index": 0, "trial": ""}, "environment": "cloud",
     "job": {"args": ["--x"]}},
    {"cluster": {"worker": ["[::1]:5000", "[::1]:5001", "localhost:5002"],
                 "evaluator": ["e:1"]},
     "task": {"type": "evaluator", "index": 0}},
]

BASES = {
    "tf_config": [{"TF_CONFIG": json.dumps(c)} for c in TF_CONFIGS],
    "explicit": [{"KERAS_DP_WORKERS": "a:1,b:2,c:3", "KERAS_DP_TASK_INDEX": "2"},
                 {"KERAS_DP_WORKERS": "h1:7000, h2:7000", "KERAS_DP_TASK_INDEX": "0",
                  "KERAS_DP_CLUSTER": "explicit"}],
    "slurm": [{"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3",
               "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[01-02]",
               "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_LOCALID": "1",
               "SLURM_NODEID": "1"},
              {"SLURM_JOB_ID": "5", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "3",
               "SLURM_JOB_NODELIST": "rack[1-2]-n1", "SLURM_TASKS_PER_NODE": "2,1",
               "KERAS_DP_PORT_BASE": "9000"}],
    "mpi": [{"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
             "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"},
            {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2",
             "KERAS_DP_HOSTFILE": "HOSTFILE"},
            {"PMIX_RANK": "0", "PMIX_SIZE": "2", "PMIX_LOCAL_RANK": "0",
             "PMIX_LOCAL_SIZE": "1"}],
    "kubernetes": [{"JOB_COMPLETION_INDEX": "1", "KERAS_DP_NUM_WORKERS": "3",
                    "KERAS_DP_HOST_PATTERN": "train-{index}.train-svc"},
                   {"JOB_COMPLETION_INDEX": "0", "JOB_INDEX": "1", "JOBSET_NAME": "js",
                    "REPLICATED_JOB_NAME": "w", "KERAS_DP_NUM_WORKERS": "4",
                    "KERAS_DP_PODS_PER_JOB": "2"}],
}

#: Values a person or a platform may put in a variable, and some no one should.
VALUES = ["", " ", "0", "1", "2", "3", "-1", "007", " 2 ", "+1", "1.5", "1e3", "0x10", "nan",
          "²", "٣", "1_000", "99999999999999999999", "65535", "65536", "a", "a:1", ":2222",
          "a:", "[::1]:1", "[::1]", "h[1-3]", "n[1-", "n[3-1]", "n[]", "2(x2)", "1(x0)",
          "(x2)", "2(x99999999)", "{index}", "{index:x}", "{index!r}", "{0}", "{", "}",
          "{index}.{jobset}", "{index[0]}", "{index.real}", "x" * 300, "\x00", "é:1",
          "a:1,a:1", "a:1,,b:2", "auto", "single", "slurm", "tf_config", "true", "null",
          "block", "cyclic", "plane=2", "/nonexistent/hosts", "HOSTFILE", "BINARYFILE",
          "[" * 100_000, "n[1-99999999]", "a[1-999]b[1-999]", "{index} x", "{index}:1",
          "é{index}", "n[٣-٤]", "a b", "99999999999"]
KEYS = sorted({k for bases in BASES.values() for b in bases for k in b} | {
    "KERAS_DP_CLUSTER", "KERAS_DP_PORT_BASE", "KERAS_DP_WORKERS", "KERAS_DP_TASK_INDEX",
    "SLURM_DISTRIBUTION", "SLURM_NPROCS", "SLURM_NODELIST", "TF_CONFIG"})
JSON_VALUES = [None, True, False, 0, 1, -1, 2, 1.5, 10 ** 20, "", "0", "1", " 1", "²", "٣",
               "a:٣", " a:1", "a:1 ", "a b:1", "worker", "chief",
               "ps", "evaluator", "master", "a:1", ":1", "a", "[::1]:2", [], {}, ["a:1"],
               ["a:1", "a:1"], {"worker": ["x:1"]}, {"type": "worker"}, float("nan")]
ADDRESS = re.compile(r"([A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})")
CHARS = ":[]{}(),.-_ 0123456789abxé\\\"\x00"


def mutate_text(rng, text):
    text = list(text)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        where = rng.randint(0, len(text))
        if op < 0.4 and text:
            del text[min(where, len(text) - 1)]
        elif op < 0.8:
            text.insert(where, rng.choice(CHARS))
        elif text:
            text[min(where, len(text) - 1)] = rng.choice(CHARS)
    return "".join(text)


def json_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from json_paths(item, path + (i,))


def mutate_json(rng, config):
    config = copy.deepcopy(config)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in json_paths(config) if p]
        if not paths:
            return rng.choice(JSON_VALUES)
        path = rng.choice(paths)
        parent = config
        for step in path[:-1]:
            parent = parent[step]
        last, op = path[-1], rng.random()
        if op < 0.25:
            del parent[last]
        elif op < 0.6:
            parent[last] = copy.deepcopy(rng.choice(JSON_VALUES))
        elif op < 0.85 and isinstance(parent[last], str):
            parent[last] = mutate_text(rng, parent[last])
        elif isinstance(parent, dict):
            parent[rng.choice(["ps", "worker", "chief", "evaluator", "index", "type", "x",
                               "cluster", "task"])] = copy.deepcopy(rng.choice(JSON_VALUES))
        else:
            parent.append(copy.deepcopy(rng.choice(JSON_VALUES)))
    return config


def mutate(rng, environ, hostfile):
    environ = dict(environ)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.2 and environ:
            del environ[rng.choice(sorted(environ))]
        elif op < 0.3:
            environ[rng.choice(KEYS)] = rng.choice(VALUES)
        elif op < 0.45 and environ:
            environ[rng.choice(sorted(environ))] = rng.choice(VALUES)
        elif op < 0.7 and environ:
            key = rng.choice(sorted(environ))
            environ[key] = mutate_text(rng, environ[key])
        elif "TF_CONFIG" in environ and op < 0.9:
            try:
                config = json.loads(environ["TF_CONFIG"])
            except ValueError:
                continue
            environ["TF_CONFIG"] = json.dumps(mutate_json(rng, config))
        else:
            other = rng.choice([b for bases in BASES.values() for b in bases])
            key = rng.choice(sorted(other))
            environ[key] = other[key]
    files = {"HOSTFILE": hostfile, "BINARYFILE": hostfile + ".bin"}
    return {k: files.get(v, v) for k, v in environ.items()}


class TFChecker:
    """Reads a produced TF_CONFIG back with TensorFlow's own resolver."""

    def __init__(self, tf):
        self.tf = tf
        self.seen = {}

    def problem(self, info: ClusterInfo):
        text = info.to_json()
        if text not in self.seen:
            self.seen[text] = self._problem(text)
        return self.seen[text]

    def _problem(self, text):
        resolver_cls = self.tf.distribute.cluster_resolver.TFConfigClusterResolver
        saved = os.environ.get("TF_CONFIG")
        os.environ["TF_CONFIG"] = text
        try:
            config = json.loads(text)
            resolver = resolver_cls()
            spec = resolver.cluster_spec()
            if not config.get("cluster"):
                return None if not spec.as_dict() else f"an empty cluster gave {spec.as_dict()}"
            task_type, task_id = resolver.task_type, resolver.task_id
            if (task_type, task_id) != (config["task"]["type"], config["task"]["index"]):
                return f"TensorFlow reads the task as {task_type} {task_id}"
            spec.task_address(task_type, task_id)
            self.tf.train.ClusterSpec(spec.as_dict())
            for job, addresses in config["cluster"].items():
                for address in addresses:  # what gRPC will be asked to reach
                    match = ADDRESS.fullmatch(address)
                    if not match or not 1 <= int(match.group(2)) <= 65535:
                        return f"{job} address {address!r} is not host:port"
            return None
        except Exception as exc:  # noqa: BLE001 - any TensorFlow refusal is the finding
            return f"TensorFlow refuses it: {type(exc).__name__}: {exc}"
        finally:
            if saved is None:
                del os.environ["TF_CONFIG"]
            else:
                os.environ["TF_CONFIG"] = saved


class _Slow(Exception):
    pass


def _alarm(signum, frame):
    raise _Slow()


def resolve_one(environ):
    """`("ok", info)`, `("error", exc)` or `("bug", description)`."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        return "ok", resolve_cluster(environ, exchange=lambda launcher: [
            f"node{i}:{9000 + i}" for i in range(launcher.world_size())])
    except ClusterConfigError as exc:
        return "error", exc
    except _Slow:
        return "bug", "took more than 1 s"
    except Exception as exc:  # noqa: BLE001 - the finding
        return "bug", f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_every_base_environment_resolves(tmp_path, tf):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("n1 slots=2\nn2 slots=2\n")
    checker = TFChecker(tf)
    for source, bases in BASES.items():
        for base in bases:
            environ = {k: (str(hostfile) if v == "HOSTFILE" else v) for k, v in base.items()}
            outcome, info = resolve_one(environ)
            assert outcome == "ok", (source, environ, info)
            assert checker.problem(info) is None, (source, environ)
            assert info.is_multi_worker


def test_random_mutations_resolve_or_raise_cluster_config_error(tmp_path, tf, capsys):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("n1 slots=2\nn2 slots=2\n")
    (tmp_path / "hosts.bin").write_bytes(bytes(range(256)))
    rng = random.Random(SEED)
    checker = TFChecker(tf)
    outcomes, bugs = Counter(), []
    started = time.perf_counter()
    for source, bases in BASES.items():
        for _ in range(PER_SOURCE):
            environ = mutate(rng, rng.choice(bases), str(hostfile))
            outcome, value = resolve_one(environ)
            if outcome == "ok":
                why = checker.problem(value)
                if why is not None:
                    outcome, value = "bug", f"resolved, but {why}"
            outcomes[(source, outcome)] += 1
            if outcome == "bug":
                bugs.append((environ, value))
    seconds = time.perf_counter() - started
    with capsys.disabled():
        total = sum(outcomes.values())
        print(f"\nfuzz: {total} mutations in {seconds:.1f} s (seed {SEED}): " + ", ".join(
            f"{s} {o} {n}" for (s, o), n in sorted(outcomes.items())))
    assert not bugs, "\n".join(f"{value}\n    environ={environ!r}" for environ, value in bugs[:15])
    for source in BASES:  # the mutations reach both outcomes for every source
        assert outcomes[(source, "ok")] > 50 and outcomes[(source, "error")] > 50, outcomes
