"""Packaging and CI: what `pip install` and `.ci/run` do with the project's own files.

`setup.py` is run with `setuptools.setup` captured, so the tests check the
arguments pip would get (packages, requirements, extras, entry points), not
the text of the file. None of them imports TensorFlow.
"""

import ast
import importlib
import importlib.metadata
import os
import re
import runpy
import shlex
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_dp")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


def readme_commands():
    """The README's set-up commands: its `bash` code blocks."""
    return re.findall(r"```bash\n(.+?)\n```", read("README.md"), re.S)


def readme_command(word):
    """The README set-up command that runs `word` (e.g. "pytest")."""
    found = [command for command in readme_commands() if word in command]
    assert len(found) == 1, f"README: expected one set-up command running {word!r}: {found}"
    return found[0]


def normalized(command):
    """A shell command with its spacing and quoting normalized."""
    try:
        return " ".join(shlex.split(command))
    except ValueError:  # not a whole command (e.g. an unclosed quote)
        return " ".join(command.split())


@pytest.fixture(scope="module")
def setup_args():
    """The keyword arguments setup.py passes to `setuptools.setup`."""
    import setuptools

    captured = {}
    original, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(ROOT)  # find_packages() looks in the current directory
        runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
        os.chdir(cwd)
    assert captured, "setup.py did not call setuptools.setup"
    return captured


def requirement_name(requirement):
    """`ray[train]>=2.40` -> `ray`, normalized as pip compares names."""
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def test_ci_runs_the_readme_test_command():
    """`.ci/run` executes the README's test command itself (not in a comment)."""
    command = normalized(readme_command("pytest"))
    script = read(".ci/run").replace("\\\n", " ")  # continued lines joined
    executed = [normalized(line) for line in script.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    # `|| exit 1` may follow: set -e does not stop inside an && list.
    assert any(line in (command, command + " || exit 1") for line in executed), (
        f".ci/run does not run the README's test command: {command}")


def test_readme_commands_install_declared_extras(setup_args):
    """Every extra the set-up commands install (e.g. `.[cpu,test,ray]`) exists."""
    declared = set(setup_args["extras_require"])
    used = {extra for command in readme_commands()
            for group in re.findall(r'"\.\[([\w,-]+)\]"', command) for extra in group.split(",")}
    assert {"cpu", "test"} <= used, "README: the set-up commands install no [cpu]/[test] extra"
    assert used <= declared, f"README installs undeclared extras: {used - declared}"


def test_console_script_runs_the_readme_main_job(setup_args):
    """`keras-dp` resolves to the CLI, and the README's main job is one of its commands."""
    scripts = dict(entry.replace(" ", "").split("=")
                   for entry in setup_args["entry_points"]["console_scripts"])
    module_name, function_name = scripts["keras-dp"].split(":")
    entry_point = getattr(importlib.import_module(module_name), function_name)
    assert callable(entry_point)

    main_job = readme_command("keras-dp train").split("&&")[-1].split()
    assert main_job[0] == "keras-dp", main_job
    from keras_dp.cli import build_parser

    args = build_parser().parse_args(main_job[1:])
    assert args.command == "train" and callable(args.func)


def test_every_source_directory_is_packaged(setup_args):
    """pip installs every directory of keras_dp/ that holds modules (none is left out)."""
    packaged = set(setup_args["packages"])
    on_disk = {os.path.relpath(directory, ROOT).replace(os.sep, ".")
               for directory, _, files in os.walk(PACKAGE)
               if "__pycache__" not in directory and any(f.endswith(".py") for f in files)}
    assert on_disk <= packaged, f"not installed by pip: {sorted(on_disk - packaged)}"
    assert all(name == "keras_dp" or name.startswith("keras_dp.") for name in packaged)


def imported_modules():
    """Top-level names of every module keras_dp's code imports, with a file importing each."""
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as handle:
                    tree = ast.parse(handle.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        modules = [node.module]
                    else:
                        continue
                    for module in modules:
                        found.setdefault(module.split(".")[0], os.path.relpath(path, ROOT))
    return found


def test_every_third_party_import_is_declared(setup_args):
    """Each distribution keras_dp imports is in install_requires or an extra."""
    declared = {requirement_name(r) for r in setup_args["install_requires"]}
    for requirements in setup_args["extras_require"].values():
        declared |= {requirement_name(r) for r in requirements}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, path in imported_modules().items():
        if module in sys.stdlib_module_names or module in ("keras_dp", "__future__"):
            continue
        names = {requirement_name(d) for d in distributions.get(module, [module])}
        if not names & declared:
            undeclared[module] = path
    assert not undeclared, f"imported but not declared in setup.py: {undeclared}"
