#!/usr/bin/env bash
# One GPU call for the portrait corpus: the conditional BEGAN-CS runs (scripts/train_defaults.sh with GAN_DATA)
# and the reconstruction network (scripts/gpu_recon_portraits.sh) side by side on a carried corpus folder.
#
#   scripts/gpu_portraits.sh CORPUS OUT_DIR            # the real run (CUDA)
#   scripts/gpu_portraits.sh CORPUS OUT_DIR --smoke    # seconds-long CPU rehearsal
#
# CORPUS: a merged corpus folder (`surrogate data portraits-merge --out data/gpu_corpus PART...`), carried.
# Environment: GAN_VARIANTS (default: the portrait config, gamma 0.5, and the paper's own settings),
# GAN_MINUTES (default 6.5), RECON=0 (no recon run: recon v3 is shipped; then no recon.tar), RECON_STEPS
# (default: the config's), plus anything train_defaults.sh reads (a run's own config: NAME:config=FILE).
# OUT_DIR receives at most 8 files (the device tool's limit): one tar per GAN run, the first run's networks
# (NAME.nets.pt.partNN, to resume: ~22 MB at n = 64), recon.tar (weights, held-out evaluation, log) and
# bench.txt (benchmarks/gpu_generator.py on the first run's newest snapshot).
set -uo pipefail
CORPUS=${1:?usage: scripts/gpu_portraits.sh CORPUS OUT_DIR [--smoke]}
OUT=${2:?usage: scripts/gpu_portraits.sh CORPUS OUT_DIR [--smoke]}
MODE=${3:-full}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=$(cd "$CORPUS" 2>/dev/null && pwd) || { echo "CORPUS: no folder at $1" >&2; exit 2; }
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PAPER="paper:loss.gamma=0.1,model.latent_dim=64,loss.label_weight_d=1,loss.label_weight_g=1,loss.label_standardise=false,loss.label_blur=0,loss.mode_seeking=0,optim.batch_size=16,train.ema_kimg=0"
export GAN_DATA=$CORPUS MODELS=gan GAN_CONFIG=${GAN_CONFIG:-configs/gan/portraits64.toml}
export GAN_VARIANTS=${GAN_VARIANTS:-"p64 g5:loss.gamma=0.5 $PAPER"}
export GAN_MINUTES=${GAN_MINUTES:-6.5} TAR_MIB=${TAR_MIB:-9} RESUME_BUNDLE=${RESUME_BUNDLE-} NETS_BUNDLE=${NETS_BUNDLE:-p64}
SMOKE=(); [ "$MODE" = "--smoke" ] && SMOKE=(--smoke)
[ "$MODE" = "--smoke" ] && export GAN_CONFIG=${GAN_CONFIG_SMOKE:-configs/gan/tiny_cpu.toml}
RECON=${RECON:-1}
if [ "$RECON" = 1 ]; then
  RECON_OUT=$(mktemp -d)
  STEPS=${RECON_STEPS:-} bash "$ROOT/scripts/gpu_recon_portraits.sh" "$CORPUS" "$RECON_OUT" "${SMOKE[@]}" \
      > "$RECON_OUT/recon.console.log" 2>&1 &
  recon_pid=$!
fi
bash "$ROOT/scripts/train_defaults.sh" "$OUT" "${SMOKE[@]}"
gan_rc=$?
# the serving figure (issue 19): the first run's newest snapshot in torch, fp32 / bf16 / CUDA graphs by batch
first=${GAN_VARIANTS%% *}; first=${first%%:*}
snapshot=$(ls "${WORK_DIR:-$ROOT/runs/defaults}/$first/snapshots/"generator-*.pt 2>/dev/null | tail -1)
if [ -n "$snapshot" ]; then
  if [ "$MODE" = "--smoke" ]; then bench=(--device cpu --batches 2 --repeats 1); else bench=(--device cuda); fi
  PYTHONPATH=$ROOT ${PYTHON:-python3} "$ROOT/benchmarks/gpu_generator.py" --checkpoint "$snapshot" "${bench[@]}" \
      > "$OUT/bench.txt" 2>&1 || echo "the serving benchmark failed (see bench.txt)"
fi
recon_rc=0
if [ "$RECON" = 1 ]; then
  wait "$recon_pid"; recon_rc=$?
  tail -5 "$RECON_OUT/recon.console.log"
  # recon.last.pt stays behind: the 64 MiB that come back go to the GAN runs (retraining recon takes minutes)
  tar -C "$RECON_OUT" --exclude recon.last.pt -cf "$OUT/recon.tar" . && rm -rf "$RECON_OUT"
fi
ls -l "$OUT"
echo "gan exit $gan_rc, recon exit $recon_rc"
[ "$gan_rc" = 0 ] && [ "$recon_rc" = 0 ]
