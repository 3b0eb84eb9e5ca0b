#!/bin/sh
# Copy one version of every model from the shared repository into this pod's own model folder
# (every file of the version folder: model.onnx, or an OpenVINO entry's model.xml + model.bin).
#
# Why: the shared repository (a PVC the retrain Job writes to) holds many versions. Each serving pod
# stages exactly the version its pod template names, so all pods of a rollout serve the same model,
# a half-written new version is never picked up by a running pod, and `kubectl rollout undo` returns
# to the previous pin. Triton then runs with --model-control-mode=none on the staged copy.
#
# Environment:
#   MODEL_SOURCE    shared repository, read-only (default /repository)
#   MODEL_DEST      pod-local repository, an emptyDir (default /models)
#   MODEL_VERSIONS  pins, "name=version,name=version"; a model not named gets its highest version
#   MODEL_NAMES     models to stage, "name,name" (default: every folder with a config.pbtxt)
set -eu
SRC="${MODEL_SOURCE:-/repository}"
DEST="${MODEL_DEST:-/models}"
PINS="${MODEL_VERSIONS:-}"
NAMES="${MODEL_NAMES:-}"

fail() { echo "stage-models: $*" >&2; exit 1; }

[ -d "$SRC" ] || fail "model repository $SRC does not exist"
if [ -z "$NAMES" ]; then
  for dir in "$SRC"/*/; do
    [ -f "${dir}config.pbtxt" ] && NAMES="$NAMES,$(basename "$dir")"
  done
fi
NAMES=$(echo "$NAMES" | tr ',' ' ')
[ -n "$(echo "$NAMES" | tr -d ' ')" ] || fail "no model (a folder with config.pbtxt) in $SRC"

# A pin for a model that is not staged is a typo: refuse it rather than serve the wrong version.
for pin in $(echo "$PINS" | tr ',' ' '); do
  name="${pin%%=*}"
  case " $NAMES " in *" $name "*) ;; *) fail "MODEL_VERSIONS pins '$name', which is not in $SRC ($NAMES)";; esac
  case "${pin#*=}" in ''|*[!0-9]*) fail "MODEL_VERSIONS: '$pin' is not name=<integer version>";; esac
done

for name in $NAMES; do
  model="$SRC/$name"
  [ -f "$model/config.pbtxt" ] || fail "$model/config.pbtxt is missing"
  version=""
  for pin in $(echo "$PINS" | tr ',' ' '); do
    [ "${pin%%=*}" = "$name" ] && version="${pin#*=}"
  done
  if [ -z "$version" ]; then
    # Only all-digit folder names are versions (Triton's rule); a ".tmp-4" being written is skipped.
    version=$(ls "$model" | grep -E '^[0-9]+$' | sort -n | tail -n 1 || true)
    if [ -z "$version" ] && grep -qE '^backend: *"openvino"' "$model/config.pbtxt"; then
      # An OpenVINO entry (the photoreal synthesis network) whose IR was never placed on the volume
      # (`surrogate export photoreal --repository ...`): the other models still serve.
      echo "stage-models: $name skipped: no version folder (place its files with surrogate export photoreal)" >&2
      continue
    fi
    [ -n "$version" ] || fail "$model has no version folder"
  fi
  [ -d "$model/$version" ] || fail "$name version $version does not exist in $model"
  rm -rf "${DEST:?}/$name.staging"
  mkdir -p "$DEST/$name.staging"
  for file in "$model"/*; do
    [ -f "$file" ] && cp "$file" "$DEST/$name.staging/"
  done
  cp -R "$model/$version" "$DEST/$name.staging/$version"
  rm -rf "${DEST:?}/$name"
  mv "$DEST/$name.staging" "$DEST/$name"
  echo "stage-models: $name version $version"
done
