"""The `keras-dp` command: one module per sub-command, listed in `COMMANDS` (CONTRIBUTING.md).

Errors meant for people (`keras_dp.KerasDPError`) are printed without a traceback, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: Sub-command modules, in the order `keras-dp --help` lists them.
COMMANDS = ["keras_dp.cli.env", "keras_dp.cli.tf_config", "keras_dp.cli.train",
            "keras_dp.cli.generate", "keras_dp.cli.launch"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-dp",
        description="Data-parallel training of Keras models on tf.distribute.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs `keras-dp`; returns the exit status."""
    from keras_dp import early
    from keras_dp.errors import KerasDPError
    from keras_dp.fault import EXIT_USAGE
    from keras_dp.launcher import quiet

    # keras-dp's own commands set their strategy up themselves, in order (and
    # `keras-dp env` must not start a worker's runtime).
    early.disable()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet = quiet.wanted()  # before hide_import_notices sets the level
    quiet.hide_import_notices()
    if args.version:
        from keras_dp import __version__

        print(f"keras-dp {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        result = args.func(args)
    except KerasDPError as exc:
        print(f"keras-dp {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print(f"keras-dp {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def entry_point() -> None:
    sys.exit(main())
