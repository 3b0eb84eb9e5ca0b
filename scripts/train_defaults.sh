#!/usr/bin/env bash
# Train the shipped default models (conditional BEGAN-CS generator, reconstruction network) in one go on
# one GPU machine: renders the synthetic data with every core, then trains the networks side by side
# (the GAN reads its data from memory; the reconstruction network renders faces on the fly).
#
#   scripts/train_defaults.sh OUT_DIR            # the real run (CUDA; ~9 minutes on one H100, 16 cores)
#   scripts/train_defaults.sh OUT_DIR --smoke    # seconds-long CPU rehearsal of every step (SMOKE_STEPS=12)
#
# Environment:
#   MODELS="gan recon"     which networks to train (default both)
#   GAN_VARIANTS="a b:loss.label_weight_g=6,optim.batch_size=128"
#                          GAN runs trained side by side on the same data: NAME[:key=value,...] each,
#                          the overrides applied to the GAN config with --set (default: one run, "gan");
#                          a value holding commas uses ';' instead (loss.label_boost_g=AU06=2;gender=1.5);
#                          config=FILE among them trains that run from its own config (e.g. the 128 px colour
#                          model beside the 64 px grey one; --smoke shrinks it to n = 8, batch 4)
#   GAN_MINUTES=7.5        wall-time budget of each GAN run (the whole call then takes ~9 minutes on one H100
#                          with 16 cores: rendering ~1 minute, loading ~25 s);  N_FACES=40000 faces rendered
#   GAN_DEADLINE_S=550     instead of GAN_MINUTES (whole seconds): each GAN run gets what rendering left of
#                          this many seconds since the call began, less 90 s for loading and collecting (at
#                          least 1 minute; recon is not limited by it); ignored with --smoke
#   GAN_CONFIG=FILE        the GAN config (default configs/gan/default64.toml; --smoke: tiny_cpu.toml)
#   GAN_DATA=DIR           train on this image folder instead of rendering synthetic faces (e.g. a portrait
#                          corpus carried to the machine: `surrogate data portraits`), with the attribute file
#   GAN_ATTRIBUTES=FILE    (default DIR/attributes.csv); N_FACES is then unused
#   GAN_RESUME=FILE        continue this checkpoint (a last.pt, e.g. a CPU run's, carried to the machine) in
#                          every GAN run instead of starting from scratch (each run folder is emptied first);
#                          the config must have its model
#   NETS_BUNDLE=all        also bring back these GAN runs' networks without the optimiser state ("all" or
#                          names; default none) as NAME.nets.pt.part00.. (7.3 MB at n = 32, a third of a
#                          last.pt): cat them into RUN/last.pt and --resume continues with fresh Adam moments,
#                          so any branch can go on, not only the RESUME_BUNDLE one
#   TAR_MIB=15             size budget of each run's tar (the device tool brings back 64 MiB in all: with
#                          several runs and a RESUME_BUNDLE, keep runs x TAR_MIB + the bundle under it)
# Relative paths (GAN_CONFIG, GAN_RESUME) are read from the repository root. Needs bash >= 4.4.
#   RESUME_BUNDLE=NAME     also bring back that GAN run's whole last.pt (set but empty: none) (generator, discriminator,
#                          optimisers, k_t, RNG: ~58 MB at n = 64) as NAME.last.pt.part00.. of 15 MiB, so
#                          the run can be continued elsewhere: cat NAME.last.pt.part* > RUN/last.pt, then
#                          surrogate train gan --config ... --out RUN --resume (default: the first run)
#   PYTHON=python3         any python3 with torch, numpy, pillow, click and tqdm
#
# OUT_DIR receives, per GAN run, NAME.tar (its log as train.log, weights-only generator snapshots every
# train.snapshot_every steps and the last step, metrics.csv, the newest sample grids), recon.pt (weights only)
# and its log (the environment and rendering are printed, not written: the device tool brings back at most
# 8 files); hand a snapshot to `surrogate evaluate gan` / `surrogate export gan`. The project is used
# from this checkout (PYTHONPATH).
set -uo pipefail
set -f  # GAN_VARIANTS is split on whitespace, never globbed
OUT=${1:?usage: scripts/train_defaults.sh OUT_DIR [--smoke]}
MODE=${2:-full}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
CORES=$(nproc)
WORK=${WORK_DIR:-$ROOT/runs/defaults}
MODELS=${MODELS:-gan recon}
GAN_VARIANTS=${GAN_VARIANTS:-gan}
read -ra VARIANTS <<< "$GAN_VARIANTS"
RESUME_BUNDLE=${RESUME_BUNDLE-${VARIANTS[0]%%:*}}
declare -A SEEN=()
for variant in "${VARIANTS[@]}"; do
  name=${variant%%:*}
  if [[ ! "$name" =~ ^[A-Za-z0-9_-]+$ || "$name" == recon || "$name" == synth || -n "${SEEN[$name]:-}" ]]; then
    echo "GAN_VARIANTS: run name '$name' must be letters, digits, '_' or '-', unique, and not 'recon' or 'synth'" >&2
    exit 2
  fi
  SEEN[$name]=1
done
mkdir -p "$OUT" "$WORK"
log() { echo "[$(date +%T)] $*"; }
wants() { [[ " $MODELS " == *" $1 "* ]]; }

if [ "$MODE" = "--smoke" ]; then
  N=192; DEVICE=cpu; GAN_CFG=configs/gan/tiny_cpu.toml; RECON_CFG=configs/recon/tiny_cpu.toml
  GAN_ARGS=(--steps "${SMOKE_STEPS:-12}" --set train.snapshot_every=5); RECON_ARGS=(--steps 6 --workers 1); SIZE=16
else
  N=${N_FACES:-40000}; DEVICE=cuda; GAN_CFG=configs/gan/default64.toml; RECON_CFG=configs/recon/default.toml
  GAN_ARGS=(--max-minutes "${GAN_MINUTES:-7.5}"); RECON_ARGS=(--workers $((CORES > 6 ? CORES - 3 : 1))); SIZE=64
fi
GAN_CFG=${GAN_CONFIG:-$GAN_CFG}
GAN_RESUME=${GAN_RESUME:-}
if [ -n "${GAN_DEADLINE_S:-}" ] && [[ ! "$GAN_DEADLINE_S" =~ ^[0-9]+$ ]]; then
  echo "GAN_DEADLINE_S must be whole seconds, got '$GAN_DEADLINE_S'" >&2
  exit 2
fi
if [ -n "$GAN_RESUME" ] && [ ! -f "$GAN_RESUME" ]; then
  echo "GAN_RESUME: no checkpoint at $GAN_RESUME" >&2
  exit 2
fi

$PY - <<'PYEOF' 2>&1
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PYEOF

GAN_DATA=${GAN_DATA:-}
GAN_ATTRIBUTES=${GAN_ATTRIBUTES:-${GAN_DATA:+$GAN_DATA/attributes.csv}}
if [ -n "$GAN_DATA" ] && [ ! -f "$GAN_ATTRIBUTES" ]; then
  echo "GAN_DATA: no attribute file at $GAN_ATTRIBUTES" >&2
  exit 2
fi
DATA_ARGS=(--data "$WORK/synth")
[ -n "$GAN_DATA" ] && DATA_ARGS=(--data "$GAN_DATA" --attributes "$GAN_ATTRIBUTES")

if wants gan && [ -z "$GAN_DATA" ]; then
  log "rendering $N synthetic faces with $CORES processes"
  $PY -m surrogate.cli data synth --n "$N" --out "$WORK/synth" --seed 0 --size "$SIZE" \
      --workers "$CORES" --batch-size 64 > "$WORK/synth.log" 2>&1 || { tail -20 "$WORK/synth.log"; exit 1; }
  tail -c 300 "$WORK/synth.log" | tr '\r' '\n' | tail -1
fi
if [ -n "${GAN_DEADLINE_S:-}" ] && [ "$MODE" != "--smoke" ]; then
  left=$(( GAN_DEADLINE_S - SECONDS - 90 ))
  GAN_ARGS=(--max-minutes "$(awk -v s="$left" 'BEGIN { printf "%.2f", (s < 60 ? 60 : s) / 60 }')")
fi

log "training [$MODELS] on $DEVICE (GAN runs: $GAN_VARIANTS)"
declare -A PIDS=()
if wants gan; then
  for variant in "${VARIANTS[@]}"; do
    name=${variant%%:*}; sets=(); run_cfg=$GAN_CFG
    if [[ "$variant" == *:* ]]; then
      IFS=',' read -ra pairs <<< "${variant#*:}"
      for pair in "${pairs[@]}"; do
        if [[ "$pair" == config=* ]]; then
          run_cfg=${pair#config=}
          [ -f "$run_cfg" ] || { echo "GAN_VARIANTS: run $name: no config at $run_cfg" >&2; exit 2; }
          [ "$MODE" = "--smoke" ] && sets+=(--set model.n=8 --set optim.batch_size=4 --set model.aux_hidden=32)
        else
          sets+=(--set "$pair")
        fi
      done
    fi
    resume=()
    if [ -n "$GAN_RESUME" ]; then
      # an emptied folder: snapshots or metrics of an earlier call (a warm machine keeps them) would be
      # brought back as this run's
      rm -rf "${WORK:?}/$name" && mkdir -p "$WORK/$name" && cp "$GAN_RESUME" "$WORK/$name/last.pt" \
        || { echo "GAN_RESUME: cannot copy $GAN_RESUME into $WORK/$name" >&2; exit 1; }
      resume=(--resume)
    fi
    log "GAN run $name: ${sets[*]:-(config as is)} ${GAN_ARGS[*]}${GAN_RESUME:+, from $GAN_RESUME}"
    $PY -m surrogate.cli train gan --config "$run_cfg" "${DATA_ARGS[@]}" --out "$WORK/$name" \
        --device "$DEVICE" "${GAN_ARGS[@]}" "${resume[@]}" "${sets[@]}" > "$OUT/$name.log" 2>&1 &
    PIDS[$name]=$!
  done
fi
if wants recon; then
  $PY -m surrogate.cli train recon --config "$RECON_CFG" --out "$WORK/recon" --device "$DEVICE" \
      "${RECON_ARGS[@]}" > "$OUT/recon.log" 2>&1 &
  PIDS[recon]=$!
fi
FAILED=0
FAILED_RUNS=""
for name in "${!PIDS[@]}"; do
  wait "${PIDS[$name]}"; rc=$?
  [ "$rc" = 0 ] || FAILED_RUNS="$FAILED_RUNS $name"
  log "$name exit $rc"; tail -c 600 "$OUT/$name.log" | tr '\r' '\n' | tail -3
  [ "$rc" = 0 ] || FAILED=1
done

log "collecting weights-only checkpoints and figures"
$PY - "$WORK" "$OUT" "$MODELS" "$GAN_VARIANTS" "$RESUME_BUNDLE" "${TAR_MIB:-15}" "$FAILED_RUNS" \
    "${NETS_BUNDLE:-}" <<'PYEOF'
import shutil, sys, tarfile
from pathlib import Path
work, out, models, variants = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
bundle, failed, nets = sys.argv[5], set(sys.argv[7].split()), sys.argv[8].split()
LIMIT = 15 * 2**20  # the device tool brings back files of up to 16 MiB
TAR_LIMIT = min(LIMIT, int(float(sys.argv[6]) * 2**20))
if "gan" in models:
    from training.gan.checkpoint import generator_only, load_checkpoint, save_checkpoint, without_optimisers

    def write_parts(data: bytes, stem: str) -> None:
        for part, start in enumerate(range(0, len(data), LIMIT)):
            (out / f"{stem}.part{part:02d}").write_bytes(data[start : start + LIMIT])
    for name in (v.split(":")[0] for v in variants):
        run = work / name
        if name in failed:  # its log stays in OUT; its last.pt may be the GAN_RESUME input, not a result
            print(name, "failed: see", out / f"{name}.log")
            continue
        if not (run / "last.pt").is_file():
            print(name, "left no checkpoint")
            continue
        state = load_checkpoint(run / "last.pt")
        final = run / "snapshots" / f"generator-{state['step']:07d}.pt"
        if not final.is_file():  # training snapshots its last step itself when train.snapshot_every is set
            final.parent.mkdir(exist_ok=True)
            save_checkpoint(final, generator_only(state))
        print(name, "step", state["step"], "k_t", round(state["k_t"], 4))
        log = out / f"{name}.log"
        (run / "train.log").write_bytes(log.read_bytes() if log.is_file() else b"")
        members = [run / "train.log", run / "metrics.csv", run / "config.toml"]
        members += sorted((run / "samples").glob("*.png"), key=lambda p: p.stat().st_mtime)[-3:]
        budget = TAR_LIMIT - sum(p.stat().st_size for p in members if p.is_file())
        for snap in sorted((run / "snapshots").glob("*.pt"), reverse=True):  # newest first, as many as fit
            if snap.stat().st_size <= budget:
                members.append(snap)
                budget -= snap.stat().st_size
        with tarfile.open(out / f"{name}.tar", "w") as tar:
            for path in members:
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(run)))
        log.unlink(missing_ok=True)  # it is in the tar: the device tool brings back at most 8 files
        if name == bundle:
            write_parts((run / "last.pt").read_bytes(), f"{name}.last.pt")
        if name in nets or nets == ["all"]:
            save_checkpoint(run / "nets.pt", without_optimisers(state))
            write_parts((run / "nets.pt").read_bytes(), f"{name}.nets.pt")
if "recon" in models and (work / "recon" / "last.pt").is_file():
    from training.recon.checkpoint import export_weights, read_checkpoint
    export_weights(read_checkpoint(work / "recon" / "last.pt", "cpu"), out / "recon.pt")
    shutil.copy(work / "recon" / "metrics.csv", out / "recon_metrics.csv")
for p in sorted(out.iterdir()):
    print(f"{p.stat().st_size:>10} {p.name}")
total, files = sum(p.stat().st_size for p in out.iterdir()), len(list(out.iterdir()))
if total > 64 * 2**20 or files > 8:
    print(f"warning: {files} files, {total / 2**20:.1f} MiB: the device tool brings back at most 8 files and 64 MiB "
          "(lower TAR_MIB, fewer GAN_VARIANTS or RESUME_BUNDLE='')")
PYEOF
[ $? = 0 ] || { echo "collecting the results failed" >&2; FAILED=1; }
exit $FAILED
