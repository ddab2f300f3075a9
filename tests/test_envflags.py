"""keras_dp.envflags.env_flag: the one parser of on/off environment variables."""

import pytest

from keras_dp.envflags import env_flag
from keras_dp.errors import ConfigError


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("true", True), ("Yes", True), (" ON ", True),
    ("0", False), ("False", False), ("no", False), ("off", False)])
def test_on_and_off_spellings(value, expected):
    assert env_flag("KERAS_DP_CHECKS", not expected, {"KERAS_DP_CHECKS": value}) is expected


@pytest.mark.parametrize("environ", [{}, {"KERAS_DP_CHECKS": ""}, {"KERAS_DP_CHECKS": "  "}])
def test_unset_or_empty_is_the_default(environ):
    assert env_flag("KERAS_DP_CHECKS", True, environ) is True
    assert env_flag("KERAS_DP_CHECKS", False, environ) is False


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("KERAS_DP_CHECKS", "off")
    assert env_flag("KERAS_DP_CHECKS", True) is False


def test_a_bad_value_names_the_variable_and_the_accepted_values():
    with pytest.raises(ConfigError, match=r"^KERAS_DP_CHECKS: .*1, true, yes, on .*0, false, "
                                          r"no, off .*Received: KERAS_DP_CHECKS=maybe$"):
        env_flag("KERAS_DP_CHECKS", True, {"KERAS_DP_CHECKS": "maybe"})


def test_every_switch_uses_it():
    from keras_dp import loop_checks, mpi

    for read in (lambda e: loop_checks.checks_enabled(e),
                 lambda e: mpi.enabled({**e, mpi.SWITCH_VARIABLE: e["KERAS_DP_CHECKS"]})):
        with pytest.raises(ConfigError, match="Received"):
            read({"KERAS_DP_CHECKS": "maybe"})
