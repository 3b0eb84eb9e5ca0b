#!/bin/sh
# Retrain the conditional BEGAN-CS and export its best snapshot as the next version of the model repository.
#
# Environment (see retrain-job.yaml): CONFIG, TRAIN_DATA (a dataset folder on the training volume;
# empty = render a synthetic one with SYNTH_N faces into SYNTH_DIR), TRAIN_ATTRIBUTES (attribute file for an image
# folder of your own, any adapter format), RUN_DIR, REPOSITORY, STEPS, SEED, SNAPSHOT_EVERY (weights-only
# generator snapshots; each is evaluated and the best exported), DEVICE (cuda).
set -eu
RUN_DIR="${RUN_DIR:-/workspace/runs/gan}"
REPOSITORY="${REPOSITORY:-/repository}"
DEVICE="${DEVICE:-cuda}"
DATA="${TRAIN_DATA:-}"

if [ -z "$DATA" ]; then
  DATA="${SYNTH_DIR:-/workspace/data/synthetic}"
  if [ ! -f "$DATA/attributes.csv" ]; then
    surrogate data synth --n "${SYNTH_N:-50000}" --out "$DATA" --seed "${SEED:-0}"
  fi
fi
# --max-minutes 0: the config's wall-time budget is for one-call GPU sessions; a Job trains all STEPS.
set -- --config "$CONFIG" --data "$DATA" --out "$RUN_DIR" --device "$DEVICE" --steps "${STEPS:-100000}" \
  --max-minutes 0 --set "train.snapshot_every=${SNAPSHOT_EVERY:-10000}"
# A retried pod (preemption, node loss) continues from the last checkpoint.
[ -f "$RUN_DIR/last.pt" ] && set -- "$@" --resume
# In the background with SIGTERM forwarded: this shell is the container's PID 1, which the kernel does not
# stop on SIGTERM and which would not pass it on, so an eviction would SIGKILL training after the grace
# period and lose up to a checkpoint interval. Forwarded, training stops at a step boundary with a
# checkpoint and exits 143; the pod fails, the Job retries it (DisruptionTarget: not counted) and resumes.
# (SIGTERM during data rendering, evaluation or export is still ignored by this shell: those steps are
# short and repeatable, and the kubelet's SIGKILL ends them after the grace period.)
TRAIN_PID=
TERMINATED=0
trap 'TERMINATED=1; [ -n "$TRAIN_PID" ] && kill -TERM "$TRAIN_PID" 2>/dev/null || true' TERM INT
surrogate train gan "$@" ${TRAIN_ATTRIBUTES:+--attributes "$TRAIN_ATTRIBUTES"} &
TRAIN_PID=$!
if [ "$TERMINATED" = 1 ]; then kill -TERM "$TRAIN_PID" 2>/dev/null || true; fi  # signalled before the PID was known
# A trapped signal ends `wait` early with status > 128: wait again until training itself has exited
# (after writing its checkpoint) and keep that status.
while :; do
  STATUS=0
  wait "$TRAIN_PID" || STATUS=$?
  kill -0 "$TRAIN_PID" 2>/dev/null || break
done
trap - TERM INT
if [ "$STATUS" -ne 0 ]; then
  echo "retrain: training stopped with status $STATUS; nothing exported (a retry resumes from $RUN_DIR/last.pt)" >&2
  exit "$STATUS"
fi

# M_global does not track attribute fidelity: evaluate every snapshot with the repository's
# reconstruction network (independent of the GAN's own label predictor) and export the best one.
# (SNAPSHOT_EVERY=0: no snapshots; the last checkpoint is exported unevaluated.)
ESTIMATOR=ridge
[ -d "$REPOSITORY/recon" ] && ESTIMATOR="$REPOSITORY"
if [ "${SNAPSHOT_EVERY:-10000}" != 0 ]; then
  surrogate evaluate gan --checkpoint "$RUN_DIR" --data "$DATA" \
    ${TRAIN_ATTRIBUTES:+--attributes "$TRAIN_ATTRIBUTES"} --estimator "$ESTIMATOR" --out "$RUN_DIR/eval" --device "$DEVICE"
  BEST=$(python3 -c 'import json, sys; print("%07d" % json.load(open(sys.argv[1]))["best_step"])' \
    "$RUN_DIR/eval/snapshots.json")
  set -- --checkpoint "$RUN_DIR/snapshots/generator-$BEST.pt" --metrics "$RUN_DIR/eval/step_$BEST/evaluation.json"
else
  BEST=last
  set -- --checkpoint "$RUN_DIR/last.pt"
fi

# Writes REPOSITORY/gan_generator/<latest + 1>/ atomically; running pods never see it (they serve
# their staged, pinned copy) until the new version is rolled out.
surrogate export gan "$@" --repository "$REPOSITORY"
echo "retrain: exported step $BEST; versions now: $(ls "$REPOSITORY/gan_generator" | grep -E '^[0-9]+$' | sort -n | tr '\n' ' ')"
