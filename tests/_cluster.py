"""The shared helpers of the tests/test_cluster_*.py tables.

Each case is a plain dict `environ`; no test touches os.environ. A valid case is
`(id, environ, expected fields)`; an invalid one is `(id, environ, variable named, words
that must appear, error class)`.
"""

import json

import pytest

from keras_dp.cluster import ClusterInfo, resolve_cluster

SLURM_2x2 = {
    "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3",
    "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[01-02]",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
}


def tf_config(cluster, task=None, **extra):
    config = {"cluster": cluster, **extra}
    if task is not None:
        config["task"] = task
    return json.dumps(config)


def valid(cases):
    """Parametrizes `(environ, expected)` by the cases' ids."""
    return pytest.mark.parametrize("environ,expected", [c[1:] for c in cases],
                                   ids=[c[0] for c in cases])


def invalid(cases):
    """Parametrizes `(environ, variable, words, error)` by the cases' ids."""
    return pytest.mark.parametrize("environ,variable,words,error", [c[1:] for c in cases],
                                   ids=[c[0] for c in cases])


def check_valid(environ, expected):
    info = resolve_cluster(environ)
    assert isinstance(info, ClusterInfo)
    for field, value in expected.items():
        if field == "tf_config":
            assert info.to_tf_config() == value
        else:
            assert getattr(info, field) == value, field


def check_invalid(environ, variable, words, error):
    with pytest.raises(error) as caught:
        resolve_cluster(environ)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith(variable), message
    assert words in message, message
    assert "Fix:" in message, message
    assert caught.value.variable == variable


def table_tests(valid_cases, invalid_cases):
    """The two table tests of a tests/test_cluster_*.py module, from its VALID and INVALID cases.

    Bind them to module names starting with `test_` for pytest to collect them.
    """
    @valid(valid_cases)
    def test_valid_environments(environ, expected):
        check_valid(environ, expected)

    @invalid(invalid_cases)
    def test_bad_input_names_variable_field_and_fix(environ, variable, words, error):
        check_invalid(environ, variable, words, error)

    return test_valid_environments, test_bad_input_names_variable_field_and_fix
