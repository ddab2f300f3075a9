"""`keras-dp launch -n N [options] [--] COMMAND [ARGS...]`: N workers on this machine.

See docs/launch.md.
"""

from __future__ import annotations

import argparse
import sys

from keras_dp.cli._help import Formatter


_EPILOG = """\
exit status: 0 when every worker exited 0; otherwise the code of the worker that failed
first (128 + N for signal N). A keras_dp worker exits with
  1   its program failed           2   a usage or configuration error
  75  preempted, a backup saved    76  another worker died, froze or failed
  77  a worker did not join in time (start-up)
SIGINT/SIGTERM are forwarded to every worker (a second one kills them).
See docs/launch.md and docs/fault_tolerance.md."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "launch", help="run a training command as N workers on this machine",
        description="Start N workers of COMMAND on this machine, each with its own TF_CONFIG\n"
                    "(docs/launch.md).",
        usage="keras-dp launch -n N [options] [--] COMMAND [ARGS...]",
        formatter_class=Formatter, epilog=_EPILOG)
    parser.add_argument("-n", "--num-workers", type=int, required=True, metavar="N",
                        help="number of worker processes")
    parser.add_argument("--max-restarts", type=int, default=0, metavar="R",
                        help="start all workers again (new ports) after a failure or a "
                             "preemption, up to R times; not after exit code 2")
    parser.add_argument("--cpu-replicas", type=int, default=None, metavar="K",
                        help="export KERAS_DP_CPU_REPLICAS=K")
    parser.add_argument("--port-base", type=int, default=None, metavar="PORT",
                        help="use ports PORT..PORT+N-1 (default: free ports, from "
                             "portpicker)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address in TF_CONFIG")
    parser.add_argument("--isolate", action="store_true",
                        help="run the workers in a private network namespace (loopback only)")
    parser.add_argument("--log-dir", default=None, metavar="DIR",
                        help="also write each worker's output to DIR/worker-N.log")
    parser.add_argument("--stop-grace", type=float, default=10.0, metavar="SECONDS",
                        help="after a worker fails, the others get SECONDS to stop by themselves "
                             "before they are killed; a worker stopped (SIGSTOP) that long "
                             "counts as failed")
    parser.add_argument("--no-prefix", action="store_true",
                        help="do not prefix output lines with [worker N]")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="a script.py (run with this Python) or, after --, any command")
    parser.set_defaults(func=run)


def run(args) -> int:
    from keras_dp.errors import ConfigError
    from keras_dp.launcher import Launcher

    if args.isolate:
        from keras_dp.launcher.isolation import enter_private_network

        if args.host not in ("127.0.0.1", "localhost"):
            raise ConfigError("--isolate keeps the workers on this machine's loopback, where "
                              f"nothing can reach {args.host}", variable="--host",
                              received=args.host,
                              fix="leave --host out with --isolate, or drop --isolate")
        how = enter_private_network()
        print(f"[launcher] isolated: the workers run in a private {how} holding only "
              "loopback; their ports are unreachable from outside this launch",
              file=sys.stderr, flush=True)
    return Launcher(args.command, args.num_workers, max_restarts=args.max_restarts,
                    cpu_replicas=args.cpu_replicas, port_base=args.port_base, host=args.host,
                    log_dir=args.log_dir, stop_grace=args.stop_grace,
                    prefix=not args.no_prefix, quiet=args.quiet).run().returncode
