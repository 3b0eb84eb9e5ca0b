#!/usr/bin/env bash
# Train the two shipped default models (conditional BEGAN-CS generator, reconstruction network) in one
# go on one GPU machine: renders the synthetic data with every core, then trains both networks side by
# side (the GAN reads its data from memory; the reconstruction network renders faces on the fly).
#
#   scripts/train_defaults.sh OUT_DIR            # the real run (CUDA; ~8 minutes on one H100, 16 cores)
#   scripts/train_defaults.sh OUT_DIR --smoke    # seconds-long CPU rehearsal of every step
#
# OUT_DIR receives weights-only checkpoints (gan_generator.pt, recon.pt), metrics CSVs, sample grids and
# logs; hand the checkpoints to `surrogate export`. Works with any python3 that has torch, numpy,
# pillow, click and tqdm (PYTHON=... to choose); the project is used from this checkout (PYTHONPATH).
set -uo pipefail
OUT=${1:?usage: scripts/train_defaults.sh OUT_DIR [--smoke]}
MODE=${2:-full}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
CORES=$(nproc)
WORK=${WORK_DIR:-$ROOT/runs/defaults}
mkdir -p "$OUT" "$WORK"
log() { echo "[$(date +%T)] $*"; }

if [ "$MODE" = "--smoke" ]; then
  N=192; DEVICE=cpu; GAN_CFG=configs/gan/tiny_cpu.toml; RECON_CFG=configs/recon/tiny_cpu.toml
  GAN_ARGS=(--steps 12); RECON_ARGS=(--steps 6 --workers 1); SIZE=16
else
  N=${N_FACES:-40000}; DEVICE=cuda; GAN_CFG=configs/gan/default64.toml; RECON_CFG=configs/recon/default.toml
  GAN_ARGS=(--max-minutes "${GAN_MINUTES:-6}"); RECON_ARGS=(--workers $((CORES > 6 ? CORES - 3 : 1))); SIZE=64
fi

$PY - <<'PYEOF' 2>&1 | tee "$OUT/environment.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PYEOF

log "rendering $N synthetic faces with $CORES processes"
$PY -m surrogate.cli data synth --n "$N" --out "$WORK/synth" --seed 0 --size "$SIZE" \
    --workers "$CORES" --batch-size 64 > "$OUT/synth.log" 2>&1 || { tail -20 "$OUT/synth.log"; exit 1; }
tail -1 "$OUT/synth.log"

log "training the GAN and the reconstruction network side by side on $DEVICE"
$PY -m surrogate.cli train gan --config "$GAN_CFG" --data "$WORK/synth" --out "$WORK/gan" --device "$DEVICE" \
    "${GAN_ARGS[@]}" > "$OUT/gan.log" 2>&1 &
GAN_PID=$!
$PY -m surrogate.cli train recon --config "$RECON_CFG" --out "$WORK/recon" --device "$DEVICE" \
    "${RECON_ARGS[@]}" > "$OUT/recon.log" 2>&1 &
RECON_PID=$!
wait $GAN_PID; GAN_RC=$?
wait $RECON_PID; RECON_RC=$?
log "gan exit $GAN_RC, recon exit $RECON_RC"
tail -c 1500 "$OUT/gan.log"; echo; tail -c 1500 "$OUT/recon.log"; echo

log "collecting weights-only checkpoints and figures"
$PY - "$WORK" "$OUT" <<'PYEOF'
import shutil, sys
from pathlib import Path
import torch
work, out = Path(sys.argv[1]), Path(sys.argv[2])
gan = work / "gan" / "last.pt"
if gan.is_file():
    state = torch.load(gan, map_location="cpu", weights_only=False)
    keep = {k: state[k] for k in ("format", "config", "schema", "generator", "step", "k_t", "metrics") if k in state}
    torch.save(keep, out / "gan_generator.pt")
    print("gan step", state.get("step"), "k_t", state.get("k_t"))
recon = work / "recon" / "last.pt"
if recon.is_file():
    from training.recon.checkpoint import export_weights, read_checkpoint
    export_weights(read_checkpoint(recon, "cpu"), out / "recon.pt")
for run in ("gan", "recon"):
    for name in ("metrics.csv",):
        if (work / run / name).is_file():
            shutil.copy(work / run / name, out / f"{run}_{name}")
    samples = sorted((work / run).rglob("*.png"), key=lambda p: p.stat().st_mtime)
    for p in samples[-2:]:
        shutil.copy(p, out / f"{run}_{p.name}")
for p in sorted(out.iterdir()):
    print(f"{p.stat().st_size:>10} {p.name}")
PYEOF
exit $(( GAN_RC || RECON_RC ))
