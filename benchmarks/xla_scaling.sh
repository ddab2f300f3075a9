#!/usr/bin/env bash
# XLA rows of the scaling table (benchmarks/RESULTS.md), side by side in one session:
# `keras-dp train`, tiny preset, global batch 64, 120 steps, with and without XLA, as
# 1 process, 2 workers (`keras-dp launch -n 2`) and MirroredStrategy over 2 logical CPUs.
# Two rounds, the second in the reverse order, so drift in the machine's load hits every
# row alike; each line is one run's own throughput line (timed steps, compilation excluded).
# Usage: flock /tmp/cpu.lock bash benchmarks/xla_scaling.sh [OUT_DIR] [ROUNDS]
set -u
out=${1:-/tmp/keras_dp_xla_scaling}
rounds=${2:-2}
mkdir -p "$out"
common=(--steps 120 --global-batch-size 64 --validate-every 120 --val-steps 2
        --sample-tokens 0 --no-backup --progress none)
run() {  # label, then the command
    local label=$1; shift
    rm -rf "$out/$label"
    "$@" --output-dir "$out/$label" "${common[@]}" > "$out/$label.log" 2>&1
    echo "$label: $(grep -h -m1 'throughput' "$out/$label.log" || tail -3 "$out/$label.log")"
}
labels=(1p-xla 1p-noxla 2w-xla 2w-noxla mirr2-xla mirr2-noxla)
declare -A cmd=(
    [1p-xla]="keras-dp train --xla"
    [1p-noxla]="keras-dp train --no-xla"
    [2w-xla]="keras-dp launch -n 2 -- keras-dp train --xla"
    [2w-noxla]="keras-dp launch -n 2 -- keras-dp train --no-xla"
    [mirr2-xla]="keras-dp train --cpu-replicas 2 --xla"
    [mirr2-noxla]="keras-dp train --cpu-replicas 2 --no-xla"
)
for ((round = 1; round <= rounds; round++)); do
    echo "round $round ($(date -u +%H:%M) UTC, load $(cut -d' ' -f1 /proc/loadavg))"
    order=("${labels[@]}")
    if ((round % 2 == 0)); then
        order=(); for ((i = ${#labels[@]} - 1; i >= 0; i--)); do order+=("${labels[i]}"); done
    fi
    for label in "${order[@]}"; do
        # shellcheck disable=SC2086  # the command is split into words on purpose
        run "$label-r$round" ${cmd[$label]}
    done
done
