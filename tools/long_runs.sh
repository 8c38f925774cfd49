#!/usr/bin/env bash
# The book's long runs (training and measuring), one job after another on one core.
# Every job is resumable: each step skips what is done (a model, an epoch), so rerunning
# the same line after a kill loses at most the model or epoch in progress. Start one line
# per core in the background, e.g. on two cores:
#
#   nohup tools/long_runs.sh zoo-seed:1 rmnist-seed:1 >/dev/null 2>&1 &
#   nohup tools/long_runs.sh zoo-seed:2 rmnist-seed:2 >/dev/null 2>&1 &
#
# Jobs:
#   zoo-seed:K         the ten small zoo models (60k images, no augmentation) with training
#                      seed K: train, then measure (results/zoo/runs/seedK,
#                      results/architectures/zoo-lee/runs/seedK)
#   zoo-passes:P:K     the small zoo models at 2k and 8k images, each for P passes over its
#                      own training set, seed K (results/zoo/runs/passesP-seedK, ...). At
#                      P = 8 a 2k model takes 250 steps and an 8k one 1,000 (the zoo's 938);
#                      the 60k models would take 7,500, so the factor is 2k against 8k.
#   rmnist-seed:K      rotated MNIST, full preset, the MAE and scratch ViTs and the CNN with
#                      and without rotation augmentation, seed K (results/rotated_mnist/full-seedK)
#   rmnist-upright:K   rotated MNIST, full preset, the MAE fine-tuned on upright digits (the
#                      control of the training effect), seed K (results/rotated_mnist/upright-seedK)
#
# Progress (with the time of every step) goes to logs/long_runs/<job>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOGS=logs/long_runs
mkdir -p "$LOGS"
[[ $# -gt 0 ]] || { sed -n '2,24p' "$0" >&2; exit 2; }

small_models() {
    "$PY" - "$@" <<'EOF'
import sys
from lielib.book import zoo
sizes = {int(n) for n in sys.argv[1:]} or {60_000}
print(" ".join(e.name for e in zoo.ZOO
               if e.size == "small" and e.augment == "none" and e.n_train in sizes))
EOF
}

step() {  # step LOG COMMAND...: run one command, log its start, end and duration
    local log=$1; shift
    local start=$SECONDS
    echo "[$(date -u +%FT%TZ)] start: $*" >>"$log"
    if "$@" >>"$log" 2>&1; then
        echo "[$(date -u +%FT%TZ)] done in $((SECONDS - start)) s: $*" >>"$log"
    else
        echo "[$(date -u +%FT%TZ)] FAILED (exit $?) after $((SECONDS - start)) s: $*" >>"$log"
        return 1
    fi
}

for job in "$@"; do
    IFS=: read -r kind a b <<<"$job"
    log=$LOGS/${job//:/-}.log
    case $kind in
        zoo-seed)
            models=$(small_models)
            # one model at a time: train it, then measure it, so a lost cache costs one model
            for m in $models; do
                step "$log" "$PY" -m lielib.book.zoo_train --seed "$a" --only "$m" --no-progress
                step "$log" "$PY" -m lielib.book.zoo_measure --train-seed "$a" --only "$m"
            done ;;
        zoo-passes)
            models=$(small_models 2000 8000)
            for m in $models; do
                step "$log" "$PY" -m lielib.book.zoo_train --passes "$a" --seed "$b" --only "$m" --no-progress
                step "$log" "$PY" -m lielib.book.zoo_measure --passes "$a" --train-seed "$b" --only "$m"
            done ;;
        rmnist-seed)
            step "$log" "$PY" -m lielib.book.rotated_mnist --preset full --seed "$a" \
                --variants cnn+rot cnn scratch mae --out "results/rotated_mnist/full-seed$a" ;;
        rmnist-upright)
            step "$log" "$PY" -m lielib.book.rotated_mnist --preset full --seed "$a" \
                --variants mae+up --out "results/rotated_mnist/upright-seed$a" ;;
        *)
            echo "unknown job $job; see the top of $0" >&2; exit 2 ;;
    esac
done
