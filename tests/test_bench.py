"""The benchmarks in `benchmarks/` (not installed): the pure parts, and every smoke run.

The smoke runs (`python benchmarks/<name>.py --smoke`: the smallest
configuration, seconds each) keep every benchmark from rotting; they assert
what each must show whatever the machine's speed (who reads what, the same
loss for 1 and 2 workers, phases that add up), never a timing.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from _multiproc import ROOT, base_env

BENCHMARKS_DIR = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS_DIR)

import convergence  # noqa: E402  (benchmarks/convergence.py)
import gpu  # noqa: E402
import harness  # noqa: E402
import startup  # noqa: E402
from harness import common, machine, report  # noqa: E402


def bench(script, *args, timeout=400):
    """Runs `python benchmarks/<script>.py ARGS` (from another folder: paths must not matter)."""
    return subprocess.run([sys.executable, os.path.join(BENCHMARKS_DIR, f"{script}.py"), *args],
                          env=base_env(), capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(ROOT))


def results_of(out):
    with open(os.path.join(out, "results.json"), encoding="utf-8") as handle:
        return json.load(handle)["benchmarks"]


# -- pure parts -------------------------------------------------------------------
def test_baselines_of_known_sources():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 16, size=200_000)
    base = convergence.baselines(uniform, uniform[:20_000])
    assert base["unigram"] == pytest.approx(4.0, abs=0.01)  # log2(16)
    assert base["bigram"] == pytest.approx(4.0, abs=0.02)   # no dependence to learn
    cycle = np.tile(np.arange(8), 5000)                     # next byte is certain
    base = convergence.baselines(cycle, cycle[:4000])
    assert base["unigram"] == pytest.approx(3.0, abs=0.01)
    assert base["bigram"] < 0.01


def test_baselines_of_the_builtin_corpus():
    from keras_dp.data.builtin import builtin_corpus

    corpus = builtin_corpus()
    base = convergence.baselines(corpus.tokens("train"), corpus.tokens("validation"))
    assert 4.5 < base["unigram"] < 5.0 and 3.3 < base["bigram"] < 3.9  # README: 4.75, 3.61


def test_loss_at_time_interpolates_between_validations():
    points = [{"train_seconds": 30.0, "val_bits": 4.0}, {"train_seconds": 90.0, "val_bits": 3.0},
              {"train_seconds": 150.0, "val_bits": 2.0}]
    assert convergence.at_time(points, 60) == pytest.approx(3.5)
    assert convergence.at_time(points, 150) == pytest.approx(2.0)
    assert convergence.at_time(points, 10) is None   # before the first validation
    assert convergence.at_time(points, 180) is None  # after the end


def test_model_flops_per_token():
    # GPT-2 small's shape: 12 x 12 d^2 + V d matmul parameters ~ 124 M with a 50257 vocab.
    flops = gpu.model_flops_per_token(768, 12, 1024, 50257)
    attention = 12 * 12 * 768 * 1024
    assert flops == 6 * (12 * 12 * 768 ** 2 + 50257 * 768) + attention
    assert (flops - attention) / 6 == pytest.approx(124e6, rel=0.01)


def test_peak_tflops_matches_the_most_specific_name_first():
    # "H100 PCIe" and "L40S" also contain "H100" and "L4": the first match in the table wins.
    assert gpu.peak_tflops("NVIDIA H100 PCIe") != gpu.peak_tflops("NVIDIA H100 80GB HBM3")
    assert gpu.peak_tflops("NVIDIA L40S") != gpu.peak_tflops("NVIDIA L4")
    assert gpu.peak_tflops("nvidia a100-sxm4-40gb") == gpu.peak_tflops("NVIDIA A100")
    assert gpu.peak_tflops("Tesla T4") is None and gpu.peak_tflops("") is None


def test_startup_phases_add_up():
    marks = {"launched": 100.0, "started": 100.2, "imported": 105.0, "scope": 105.5,
             "built": 106.0, "fit_begin": 106.1, "first_step": 110.0}
    phases = startup.phases(marks)
    assert list(phases) == startup.PHASES
    assert sum(phases.values()) == pytest.approx(10.0)
    assert phases["TF import"] == pytest.approx(4.8)


def test_summaries_and_tables():
    stats = common.summarize([1.0, 2.0, 3.0, 10.0])
    assert stats["median"] == 2.5 and stats["n"] == 4 and stats["max"] == 10.0
    assert common.summarize([]) == {"n": 0}
    assert math.isnan(common.ratio(1.0, 0.0))
    text = common.table(["a", "bb"], [["x", 1.23456], ["yy", float("nan")]])
    assert text.splitlines()[2].split() == ["x", "1.235"] and "n/a" in text


def test_machine_report_names_cpu_load_and_versions():
    info = machine.machine_info()
    text = machine.describe(info)
    assert info["cores"] >= 1 and info["versions"]["tensorflow"]
    assert "load average" in text and "TensorFlow" in text and info["cpu"] in text


def test_results_merge_and_summary(tmp_path):
    common.save_result(str(tmp_path), "startup", {
        "summary": {"1": {**{p: 1.0 for p in startup.PHASES}, "total": 6.0,
                          "second_step": 0.2}},
        "command": "python benchmarks/startup.py", "seconds": 12.0, "smoke": False,
        "machine": machine.machine_info(), "load_after": [0.1, 0.1, 0.1]})
    common.save_result(str(tmp_path), "other", {"x": 1})
    results = common.load_results(str(tmp_path))
    assert set(results["benchmarks"]) == {"startup", "other"}
    path = report.write_summary(results, str(tmp_path))
    text = open(path, encoding="utf-8").read()
    assert "## startup" in text and "| 1 worker(s) | 1.00 |" in text


def test_unknown_benchmark_is_a_usage_error(capsys):
    assert harness.main(["speed", "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "BENCHMARK: is not a benchmark" in err and "overhead" in err


def test_every_benchmark_is_a_script_with_the_harness_flags():
    for name, module in harness.BENCHMARKS.items():
        assert os.path.exists(os.path.join(BENCHMARKS_DIR, f"{module}.py")), name
        assert __import__(module).NAME == name


# -- smoke runs: every benchmark in its smallest configuration ---------------------

@pytest.mark.multiprocess
@pytest.mark.bench
def test_overhead_smoke(tmp_path):
    result = bench("overhead", "--smoke", "--out", str(tmp_path), "--no-plot")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "step-time ratio hand-written / keras_dp" in result.stdout
    assert "load average" in result.stdout and "TensorFlow 2." in result.stdout
    run = results_of(tmp_path)["overhead"]["runs"][0]
    settings = results_of(tmp_path)["overhead"]["settings"]
    timed = settings["bursts"] * (settings["steps"] - 1)
    assert run["keras_dp"]["n"] == timed and run["handwritten"]["n"] == timed
    assert "MirroredStrategy" in run["strategy"] and "MirroredStrategy" in run["hand_strategy"]
    # The reported ratio is the one of the raw step times, bursts alternating ABBA.
    raw = run["raw"]
    assert raw["order"] == ["K,H", "H,K"][:settings["bursts"]]
    hand = np.median([t for burst in raw["handwritten"] for t in burst])
    ours = np.median([t for burst in raw["keras_dp"] for t in burst])
    assert run["ratio"] == pytest.approx(hand / ours) and run["ratio"] > 0
    assert len(run["burst_ratios"]) == settings["bursts"]
    assert "## overhead (smoke configuration: not a measurement)" in \
        (tmp_path / "summary.md").read_text()


@pytest.mark.multiprocess
@pytest.mark.bench
def test_scaling_smoke(tmp_path):
    result = bench("scaling", "--smoke", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = results_of(tmp_path)["scaling"]
    settings = data["settings"]
    configs = {c["name"]: c for c in data["configurations"]}
    assert configs["1 worker"]["efficiency"] == pytest.approx(1.0)
    mwms = configs["2 workers (MWMS)"]
    # tokens/s and efficiency follow from the measured step times.
    tokens = settings["batch"] * settings["seq_len"]
    for config in configs.values():
        assert config["step"]["n"] == settings["rounds"] * settings["bursts"] * \
            (settings["steps"] - 1)
        assert config["tokens_per_sec"] == pytest.approx(
            config["replicas"] * tokens / config["step"]["median"])
    assert mwms["efficiency"] == pytest.approx(
        mwms["tokens_per_sec"] / (2 * configs["1 worker"]["tokens_per_sec"]))
    assert mwms["allreduce_share_in_step"] == pytest.approx(
        1 - mwms["no_comm_step"]["median"] / mwms["step"]["median"])
    assert os.path.getsize(tmp_path / "scaling.png") > 10_000
    assert mwms["replicas"] == 2 and "MultiWorkerMirroredStrategy" in mwms["strategy"]
    assert 0 < mwms["allreduce"]["median"] and mwms["no_comm_step"]["n"] > 0
    assert mwms["gradient_bytes"] > 0
    if len(os.sched_getaffinity(0)) >= 2:
        assert mwms["cores"] == [[0], [1]]  # one core per worker
        assert configs["1 worker"]["cores"] == [[0]]


@pytest.mark.multiprocess
@pytest.mark.bench
def test_data_smoke_each_pipeline_reads_its_share(tmp_path):
    result = bench("dataio", "--smoke", "--out", str(tmp_path), "--no-plot")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = results_of(tmp_path)["data"]
    reads = data["reads"]
    one = next(r for r in reads if r["kind"] == "keras_dp" and r["pipelines"] == 1)
    for count in (2, 4):
        ours = [r for r in reads if r["kind"] == "keras_dp" and r["pipelines"] == count]
        theirs = [r for r in reads if r["kind"] == "DATA autoshard" and r["pipelines"] == count]
        assert len(ours) == len(theirs) == count
        # keras_dp: each pipeline reads exactly 1/N of the sequences, all of them together.
        assert all(r["elements_read"] * count == one["elements_read"] for r in ours)
        assert all(r["fraction_bytes"] < 1.5 / count for r in ours)
        assert len({tuple(r["files"]) for r in ours}) == count
        # DATA autoshard: every pipeline reads everything and keeps 1/N.
        assert all(r["fraction_elements"] == 1.0 for r in theirs)
        assert all(r["fraction_bytes"] > 0.9 for r in theirs)
        assert sum(r["elements_kept"] for r in theirs) <= theirs[0]["elements_read"]
    summary = {(s["kind"], s["pipelines"]): s for s in data["summary"]}
    for count in (1, 2, 4):
        assert summary["keras_dp", count]["total_elements_vs_one"] == pytest.approx(1.0)
        assert summary["DATA autoshard", count]["total_elements_vs_one"] == pytest.approx(count)
    assert data["throughput"]["input_tokens_per_sec"] > 0
    assert data["throughput"]["train_tokens_per_sec"] > 0


@pytest.mark.multiprocess
@pytest.mark.bench
def test_startup_smoke(tmp_path):
    result = bench("startup", "--smoke", "--out", str(tmp_path), "--no-plot")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = results_of(tmp_path)["startup"]
    assert set(data["summary"]) == {"1", "2"}
    for run in data["runs"]:
        assert len(run["results"]) == run["workers"]
        for worker in run["results"]:
            assert all(value >= 0 for value in worker["phases"].values()), worker["phases"]
            assert sum(worker["phases"].values()) == pytest.approx(worker["total"])
        if run["workers"] == 2:
            assert "MultiWorkerMirroredStrategy" in run["results"][0]["strategy"]


@pytest.mark.multiprocess
@pytest.mark.bench
def test_convergence_smoke_two_workers_match_one(tmp_path):
    result = bench("convergence", "--smoke", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = results_of(tmp_path)["convergence"]
    one, two = data["runs"]["1"], data["runs"]["2"]
    assert [p["step"] for p in one["points"]] == [p["step"] for p in two["points"]] == [3, 6]
    # Same global batches (keras_dp's data determinism): same loss at the same step.
    assert two["points"][0]["train_bits"] == pytest.approx(one["points"][0]["train_bits"],
                                                           rel=1e-3)
    assert data["same_loss"]["max_abs_diff_bits"] < 0.01
    assert one["points"][-1]["val_bits"] < 8.0  # below log2(256): it learned
    assert 4.5 < data["baselines"]["unigram"] < 5.0
    assert os.path.getsize(tmp_path / "convergence.png") > 10_000
    assert "## convergence" in (tmp_path / "summary.md").read_text()


@pytest.mark.multiprocess
@pytest.mark.bench
def test_gpu_script_runs_its_cpu_fallback(tmp_path):
    env = base_env({"PYTHON": sys.executable, "PATH": os.environ["PATH"]})
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), "--smoke",
                             "--out", str(tmp_path), "--no-plot"], env=env,
                            capture_output=True, text=True, timeout=400, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if machine.gpus():
        pytest.skip("a GPU is present: the fallback path is not taken")
    assert "CPU fallback" in result.stdout and "NOT GPU figures" in result.stdout
    data = results_of(tmp_path)["gpu"]
    assert data["settings"]["fallback"] is True
    kinds = [entry["kind"] for entry in data["results"]]
    assert kinds == ["keras", "keras_dp"]
    assert all(entry["mfu"] is None and entry["tokens_per_sec"] > 0
               for entry in data["results"])
