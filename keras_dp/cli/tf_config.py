"""`keras-dp tf-config`: this process's TF_CONFIG as one JSON line (`export TF_CONFIG=$(...)`)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tf-config", help="print TF_CONFIG for this environment as one line of JSON")
    parser.add_argument("--source", default=None,
                        help="force a source: tf_config, explicit, mpi, slurm, kubernetes, single")
    parser.add_argument("--port-base", type=int, default=None, help="first port for derived "
                        "addresses (default: KERAS_DP_PORT_BASE or 8888)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from keras_dp.cluster import resolve_cluster

    info = resolve_cluster(source=args.source, port_base=args.port_base)
    print(info.to_json())
    return 0
