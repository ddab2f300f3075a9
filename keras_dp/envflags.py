"""The one parser of keras_dp's on/off environment variables (`KERAS_DP_CHECKS`, ...)."""

from __future__ import annotations

import os
from typing import Mapping, Optional

from keras_dp.errors import ConfigError

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off")


def parse_flag(value: Optional[str]) -> Optional[bool]:
    """True or False for a spelling of on/off (see `TRUE_VALUES`), None for anything else."""
    text = str(value).strip().lower()
    return True if text in TRUE_VALUES else False if text in FALSE_VALUES else None


def env_flag(name: str, default: bool, environ: Optional[Mapping[str, str]] = None) -> bool:
    """On/off variable `name` of `environ` (default `os.environ`); `default` if unset or empty."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not str(raw).strip():
        return default
    value = parse_flag(raw)
    if value is None:
        raise ConfigError(
            "is neither on nor off", variable=name, received=raw,
            fix=f"set it to one of {', '.join(TRUE_VALUES)} (on) or "
                f"{', '.join(FALSE_VALUES)} (off), or unset it (default: "
                f"{'on' if default else 'off'})")
    return value
