#!/bin/sh
# Retrain the conditional BEGAN-CS and export it as the next version of the model repository.
#
# Environment (see retrain-job.yaml): CONFIG, TRAIN_DATA (a dataset folder on the training volume;
# empty = render a synthetic one with SYNTH_N faces), TRAIN_ATTRIBUTES (attribute file for an image
# folder of your own, any adapter format), RUN_DIR, REPOSITORY, STEPS, SEED.
set -eu
RUN_DIR="${RUN_DIR:-/workspace/runs/gan}"
REPOSITORY="${REPOSITORY:-/repository}"
DATA="${TRAIN_DATA:-}"

if [ -z "$DATA" ]; then
  DATA=/workspace/data/synthetic
  if [ ! -f "$DATA/attributes.csv" ]; then
    surrogate data synth --n "${SYNTH_N:-50000}" --out "$DATA" --seed "${SEED:-0}"
  fi
fi

set -- --config "$CONFIG" --data "$DATA" --out "$RUN_DIR" --device cuda --steps "${STEPS:-100000}"
[ -n "${TRAIN_ATTRIBUTES:-}" ] && set -- "$@" --attributes "$TRAIN_ATTRIBUTES"
# A retried pod (preemption, node loss) continues from the last checkpoint.
[ -f "$RUN_DIR/last.pt" ] && set -- "$@" --resume
surrogate train gan "$@"

# Writes REPOSITORY/gan_generator/<latest + 1>/ atomically; running pods never see it (they serve
# their staged, pinned copy) until the new version is rolled out.
surrogate export gan --checkpoint "$RUN_DIR/last.pt" --repository "$REPOSITORY"
echo "retrain: exported; versions now: $(ls "$REPOSITORY/gan_generator" | grep -E '^[0-9]+$' | sort -n | tr '\n' ' ')"
