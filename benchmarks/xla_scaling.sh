#!/usr/bin/env bash
# XLA rows of the scaling table (benchmarks/RESULTS.md), side by side in one session:
# `keras-dp train`, tiny preset, global batch 64, 120 steps, with and without XLA, as
# 1 process, 2 workers (`keras-dp launch -n 2`) and MirroredStrategy over 2 logical CPUs.
# Usage: flock /tmp/cpu.lock bash benchmarks/xla_scaling.sh [OUT_DIR]
set -u
out=${1:-/tmp/keras_dp_xla_scaling}
mkdir -p "$out"
common=(--steps 120 --global-batch-size 64 --validate-every 120 --val-steps 2
        --sample-tokens 0 --no-backup --progress none)
run() {  # label, then the command
    local label=$1; shift
    rm -rf "$out/$label"
    "$@" --output-dir "$out/$label" "${common[@]}" > "$out/$label.log" 2>&1
    echo "$label: $(grep -h -m1 'throughput' "$out/$label.log" || tail -3 "$out/$label.log")"
}
run 1p-xla     keras-dp train --xla
run 1p-noxla   keras-dp train --no-xla
run 2w-xla     keras-dp launch -n 2 -- keras-dp train --xla
run 2w-noxla   keras-dp launch -n 2 -- keras-dp train --no-xla
run mirr2-xla   keras-dp train --cpu-replicas 2 --xla
run mirr2-noxla keras-dp train --cpu-replicas 2 --no-xla
