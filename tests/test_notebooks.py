"""The Colab notebooks: stored without outputs, and run top to bottom on CPU.

The notebooks are executed with nbclient in a fresh kernel, as Colab would
run them; any error in a cell fails the test. `KERAS_DP_NOTEBOOK_QUICK=1`
makes the quick start train a few steps only. The kernel finds keras_dp
already installed (this checkout), so the install cell installs nothing.
"""

import os
import re

import pytest

from _multiproc import ROOT

NOTEBOOKS = os.path.join(ROOT, "examples", "notebooks")
NAMES = ("quickstart.ipynb", "multi_worker.ipynb")


def load(name):
    import nbformat

    return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs(name):
    import nbformat

    notebook = load(name)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
        assert "attachments" not in cell or not cell.attachments
    assert "widgets" not in notebook.metadata


class _Installed(Exception):
    """Stops the install cell once it has called pip."""


def run_install_cell(name, cwd, monkeypatch):
    """Runs the notebook's cells up to its pip install, keras_dp not importable; returns pip's args."""
    import importlib.util
    import subprocess

    calls = []

    def pip(args, **kwargs):
        calls.append(list(args))
        raise _Installed

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda module, *a: None if module == "keras_dp" else find_spec(module, *a))
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.chdir(cwd)
    namespace = {}
    for cell in load(name).cells:
        if cell.cell_type == "code":
            try:
                exec(compile(cell.source, f"{name} cell", "exec"), namespace)
            except _Installed:
                break
    assert len(calls) == 1, f"{name}: no cell ran pip install when keras_dp was missing"
    command = calls[0]
    assert command[1:4] == ["-m", "pip", "install"], command
    return [arg for arg in command[4:] if arg != "-q"]


def colab_badge_repository(name):
    """The GitHub repository the notebook's "Open in Colab" badge opens it from."""
    text = "\n".join(cell.source for cell in load(name).cells if cell.cell_type == "markdown")
    badge = re.search(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)"
                      r"/blob/main/(\S+?)\)", text)
    assert badge, f"{name}: no Open in Colab badge"
    assert badge.group(2) == f"examples/notebooks/{name}"  # the badge opens this notebook
    return badge.group(1)


@pytest.mark.parametrize("name", NAMES)
def test_colab_installs_from_the_badge_repository(name, tmp_path, monkeypatch):
    """Opened from the badge (no checkout around it), the notebook pip-installs that repository."""
    colab = tmp_path / "content" / "notebooks"
    colab.mkdir(parents=True)
    assert run_install_cell(name, colab, monkeypatch) == [
        f"git+https://github.com/{colab_badge_repository(name)}"]


@pytest.mark.parametrize("name", NAMES)
def test_clone_installs_itself(name, monkeypatch):
    """Opened in a clone without keras_dp installed, the notebook installs that clone."""
    assert run_install_cell(name, NOTEBOOKS, monkeypatch) == ["-e", ROOT]


def execute(name, workdir, monkeypatch, timeout=600):
    """Runs the notebook in a fresh kernel in `workdir`; returns it with its outputs."""
    from nbclient import NotebookClient

    monkeypatch.setenv("KERAS_DP_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [ROOT, os.environ.get("PYTHONPATH", "")]))
    notebook = load(name)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return notebook


def outputs(notebook, kind="text"):
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "text":
                texts.append(output.get("text", ""))
                texts.append(output.get("data", {}).get("text/plain", ""))
            elif kind in output.get("data", {}):
                texts.append(output["data"][kind])
    return texts


@pytest.mark.multiprocess
def test_quickstart_runs(clean_environ, monkeypatch, tmp_path):
    notebook = execute("quickstart.ipynb", tmp_path, monkeypatch)
    text = "\n".join(outputs(notebook))
    assert "keras_dp is already installed; using it" in text  # nothing reinstalled
    assert re.search(r"Cluster source : single\s", text)  # the `keras-dp env` report
    assert re.search(r"Strategy \(auto\): default", text)
    assert "default strategy: 1 replica(s), 1 worker(s)" in text
    assert outputs(notebook, "image/png"), "no loss plot"
    bits = float(re.search(r"validation: ([\d.]+) bits per byte", text).group(1))
    assert bits < 8.0  # below a uniform guess after a few steps
    assert "reloaded with the same weights: True" in text
    assert (tmp_path / "keras_dp_quickstart" / "model.keras").is_file()


@pytest.mark.multiprocess
def test_multi_worker_runs(clean_environ, monkeypatch, tmp_path):
    notebook = execute("multi_worker.ipynb", tmp_path, monkeypatch)
    text = "\n".join(outputs(notebook))
    assert "'strategy': 'MultiWorkerMirroredStrategy', 'workers': 2, 'replicas': 2" in text
    assert "worker 0 vs worker 1: max abs difference 0.00e+00" in text
    difference = float(re.search(r"one device vs two workers: max abs difference ([\d.e+-]+)",
                                 text).group(1))
    assert difference <= 1e-5

