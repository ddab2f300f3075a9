"""`python -m keras_dp.launcher._bootstrap WORKDIR`: runs a `keras_dp.launch` worker's function,
leaving its return value (chief) or its error in WORKDIR."""

from __future__ import annotations

import os
import pickle
import sys
import traceback

import cloudpickle


def _write(path: str, value) -> None:
    from keras_dp.chief_files import atomic

    with atomic(path) as temp, open(temp, "wb") as handle:
        cloudpickle.dump(value, handle)


def _error_report(exc: BaseException) -> dict:
    report = {"traceback": traceback.format_exc()}  # called while handling `exc`
    try:
        report["exception"] = cloudpickle.dumps(exc)
        pickle.loads(report["exception"])
    except Exception:  # noqa: BLE001 - some exceptions do not pickle
        report.pop("exception", None)
    return report


def main() -> int:
    from keras_dp.cluster import resolve_cluster
    from keras_dp.launcher.notebook import ERROR, PAYLOAD, RESULT

    work = sys.argv[1]
    with open(os.path.join(work, PAYLOAD), "rb") as handle:
        payload = pickle.load(handle)
    for entry in reversed(payload["sys_path"]):
        if entry not in sys.path:
            sys.path.insert(1, entry)
    cluster = resolve_cluster()
    index = cluster.worker_index or 0
    try:
        value = payload["fn"](*payload["args"], **payload["kwargs"])
        if cluster.is_chief:
            _write(os.path.join(work, RESULT.format(index)), value)
    except BaseException as exc:  # noqa: BLE001 - reported to the launching process
        from keras_dp import fault

        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return 0
        traceback.print_exc()
        _write(os.path.join(work, ERROR.format(index)), _error_report(exc))
        return fault.handle_exception(exc, cluster, report=cluster.is_multi_worker)
    return 0


if __name__ == "__main__":
    code = main()
    if code:  # do not wait at exit for peers that may be dead (see keras_dp.fault)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
