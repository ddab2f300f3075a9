"""The project's own files: README commands, CI entry point, packaging metadata."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", read("README.md"), re.S)


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in read(".ci/run")


def test_readme_has_main_job_command():
    assert any("keras-dp train" in c and "pip install" in c for c in readme_commands())


def test_setup_declares_what_is_needed():
    setup = read("setup.py")
    for requirement in ("keras>=3", "tensorflow-datasets", "importlib_resources",
                        "tensorflow-cpu", "tensorflow[and-cuda]", "portpicker",
                        "keras-dp = keras_dp.cli:entry_point"):
        assert requirement in setup, requirement


def test_extras_in_the_readme_commands_exist():
    """Every extra the set-up commands install (e.g. `.[cpu,test,ray]`) is declared."""
    setup = read("setup.py")
    declared = set(re.findall(r'^\s+"([\w-]+)": \[', setup, re.M))
    used = {extra for command in readme_commands()
            for group in re.findall(r'"\.\[([\w,-]+)\]"', command) for extra in group.split(",")}
    assert {"cpu", "test", "ray"} <= used
    assert used <= declared, used - declared
