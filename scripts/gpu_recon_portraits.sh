#!/usr/bin/env bash
# Train the reconstruction network on a carried portrait corpus on one GPU machine, evaluate it on the corpus's
# held-out rows, and bring back what `surrogate export recon` needs (issue 18, item 7).
#
#   scripts/gpu_recon_portraits.sh CORPUS OUT_DIR           # the real run: configs/recon/portraits.toml on CUDA
#   scripts/gpu_recon_portraits.sh CORPUS OUT_DIR --smoke   # seconds-long CPU rehearsal of every step
#
# CORPUS: a folder in the portrait corpus's format (attributes.csv + images64g/, as `surrogate data portraits`
# writes it), carried to the machine (the device tool's `carry`, e.g. data/portraits; 20,000 64x64 grey PNGs are
# ~57 MB of the 64 MiB a call may carry). Nothing beyond torch, numpy, pillow, click and tqdm is needed there.
#
# Environment:
#   STEPS=N          override train.steps (default: the config's)
#   BATCH=N          override train.batch_size
#   RECON_CONFIG=F   the config (default configs/recon/portraits.toml)
#   PYTHON=python3   any python3 with torch, numpy, pillow, click and tqdm
#   WORK_DIR=DIR     where the run folder goes (default runs/recon_portraits; emptied first)
#
# OUT_DIR receives (7 files; the device tool brings back at most 8, 16 MiB each): recon.pt (weights only, for
# `surrogate export recon --checkpoint`), recon.last.pt (resumable), recon_eval.json / recon_eval.md
# (`surrogate evaluate recon` on the held-out rows: pose MAE per angle, r per AU, gender AUC, the targets),
# recon_metrics.csv, recon_samples.png and recon.log. Then, on the project's machine:
#   surrogate export recon --checkpoint OUT/recon.pt --metrics OUT/recon_eval.json --repository model_repository
set -uo pipefail
CORPUS=${1:?usage: scripts/gpu_recon_portraits.sh CORPUS OUT_DIR [--smoke]}
OUT=${2:?usage: scripts/gpu_recon_portraits.sh CORPUS OUT_DIR [--smoke]}
MODE=${3:-full}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=$(cd "$CORPUS" 2>/dev/null && pwd) || { echo "CORPUS: no folder at $1" >&2; exit 2; }
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
WORK=${WORK_DIR:-$ROOT/runs/recon_portraits}
CONFIG=${RECON_CONFIG:-configs/recon/portraits.toml}
log() { echo "[$(date +%T)] $*"; }
if [ ! -f "$CORPUS/attributes.csv" ]; then
  echo "CORPUS: $CORPUS has no attributes.csv (is the corpus finished? surrogate data portraits writes it last)" >&2
  exit 2
fi
ARGS=()
[ -n "${STEPS:-}" ] && ARGS+=(--steps "$STEPS")
[ -n "${BATCH:-}" ] && ARGS+=(--batch-size "$BATCH")
if [ "$MODE" = "--smoke" ]; then
  DEVICE=cpu; ARGS=(--steps "${STEPS:-4}" --batch-size "${BATCH:-8}")
else
  DEVICE=cuda
fi

$PY - <<'PYEOF' 2>&1
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PYEOF
log "corpus $CORPUS: $(($(wc -l < "$CORPUS/attributes.csv") - 1)) rows; config $CONFIG ${ARGS[*]} on $DEVICE"

# a warm machine keeps an earlier call's run: start clean so nothing stale comes back as this run's
rm -rf "${WORK:?}" && mkdir -p "$WORK"
start=$SECONDS
$PY -m surrogate.cli train recon --config "$CONFIG" --data "$CORPUS" --out "$WORK/run" --device "$DEVICE" \
    "${ARGS[@]}" > "$OUT/recon.log" 2>&1
rc=$?
log "train exit $rc after $((SECONDS - start)) s"; tail -c 800 "$OUT/recon.log" | tr '\r' '\n' | tail -3
[ "$rc" = 0 ] || exit 1

start=$SECONDS
$PY -m surrogate.cli evaluate recon --checkpoint "$WORK/run/last.pt" --out "$WORK/eval" --device "$DEVICE" \
    >> "$OUT/recon.log" 2>&1
rc=$?
log "evaluate exit $rc after $((SECONDS - start)) s"
[ "$rc" = 0 ] || { tail -20 "$OUT/recon.log"; exit 1; }
grep -E "^(\| |Summary|Targets)" "$WORK/eval/metrics.md"

$PY - "$WORK" "$OUT" <<'PYEOF'
import shutil, sys
from pathlib import Path
from training.recon.checkpoint import export_weights, read_checkpoint
work, out = Path(sys.argv[1]), Path(sys.argv[2])
export_weights(read_checkpoint(work / "run" / "last.pt", "cpu"), out / "recon.pt")
shutil.copy(work / "run" / "last.pt", out / "recon.last.pt")
shutil.copy(work / "run" / "metrics.csv", out / "recon_metrics.csv")
shutil.copy(work / "eval" / "metrics.json", out / "recon_eval.json")
shutil.copy(work / "eval" / "metrics.md", out / "recon_eval.md")
samples = sorted((work / "run" / "samples").glob("*.png"))
if samples:
    shutil.copy(samples[-1], out / "recon_samples.png")
for p in sorted(out.iterdir()):
    print(f"{p.stat().st_size:>10} {p.name}")
PYEOF
