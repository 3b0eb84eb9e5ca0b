#!/usr/bin/env bash
# Create .venv-triton: a separate environment for the real Triton server used by the Triton test.
#
# Why a second venv: nvidia-pytriton 0.7.0 (which bundles a real `tritonserver` 2.51 binary with the
# Python backend) requires numpy<2, while the main .venv uses numpy 2. The Triton test starts that
# binary on a Python-backend variant of model_repository/ whose model.py runs the same model.onnx
# through onnxruntime, so this venv also needs onnxruntime.
#
# Usage: scripts/triton_env.sh [VENV_DIR]    (default: .venv-triton beside this script's parent)
# Idempotent: does nothing when the venv already has everything (stamp file).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-${SURROGATE_TRITON_VENV:-$ROOT/.venv-triton}}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=("nvidia-pytriton==0.7.0" "numpy<2" "onnxruntime>=1.18" "openvino==2026.4.1")
STAMP="$VENV/.surrogate-triton-ready"
WANT="${REQUIREMENTS[*]}"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "$VENV is ready"
  exit 0
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else "Python >= 3.9 needed")'
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${REQUIREMENTS[@]}"
# Fail now, not in the test, if the bundled server binary is missing.
"$VENV/bin/python" - <<'PY'
import pathlib, pytriton
root = pathlib.Path(pytriton.__file__).parent / "tritonserver"
binary = root / "bin" / "tritonserver"
assert binary.is_file(), f"no tritonserver binary in {root}"
print("tritonserver:", binary)
PY
echo "$WANT" > "$STAMP"
echo "$VENV is ready"
