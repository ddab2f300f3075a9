"""The fast tier's guard, in every Python subprocess a fast-tier test starts.

tests/conftest.py puts this directory first on the PYTHONPATH of tests that
are neither `multiprocess` nor `slow`, with `KDP_FAST_TIER_REPORT` naming a
file. A subprocess that then imports TensorFlow notes its command line in
that file and fails at the import; conftest fails the test, naming the
marker to add. (Not a KERAS_DP_ variable: tests/_multiproc.py's base_env
drops those.)
"""

import importlib.abc
import importlib.machinery
import os
import sys

_REPORT = os.environ.get("KDP_FAST_TIER_REPORT")


class _Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        with open(_REPORT, "a", encoding="utf-8") as handle:
            handle.write(" ".join(sys.argv) + "\n")
        raise ImportError("a fast-tier test started a Python process that imports TensorFlow "
                          "(a worker run): mark the test @pytest.mark.multiprocess")


def _find_spec(fullname, path=None, target=None):
    if fullname == "tensorflow":
        # find_spec() still succeeds (keras_dp checks that TensorFlow is installed
        # without importing it); only the import itself fails.
        return importlib.machinery.ModuleSpec(fullname, _Refuse())
    return _path_find_spec(fullname, path, target)


if _REPORT:
    # In PathFinder itself: import hooks such as keras_dp.early's ask the finders in turn.
    _path_find_spec = importlib.machinery.PathFinder.find_spec
    importlib.machinery.PathFinder.find_spec = staticmethod(_find_spec)
