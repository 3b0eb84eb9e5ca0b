"""Fit the photoreal method's per-attribute calibration (surrogate/portrait_models/photoreal_calibration.npz).

The data are portraits that the directions were not fitted on: the edited corpus (``surrogate data portraits
--out data/portraits_p2 --directions ...``), whose every face stores its seed's w0 (w minus its edit) and its
edited w, and whose 512 px frames (rolled) are read here, read-only: MediaPipe for pose and AUs, the shipped
recon network for gender on the aligned 64 px grey crop (as ``surrogate attributes extract`` reads it). Per
attribute, ``read ~ a + b * readout(w0) + c * readout(w)`` is fitted by least squares over the faces found;
the surrogate inverts it. No rendering: reading ~1,000 frames takes a minute or two.

    PYTHONPATH=. .venv/bin/python scripts/fit_photoreal_calibration.py --corpus data/portraits_p2 --n 1000 \
        --cache runs/calibration_readings.npz --out surrogate/portrait_models/photoreal_calibration.npz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from surrogate.photoreal import DIRECTIONS_FILE, MODELS_DIR, Calibration
from surrogate.schema import DEFAULT_SCHEMA

# How far one read-out unit may move w0 (attribute units): the corpus's edits reach about 3 spreads.
LIMIT_SPREADS = 3.0


def readings(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(N, A) attributes read from frames (MediaPipe pose and AUs, recon gender; NaN rows: no face), found."""
    from surrogate.extract import OnnxEstimator
    from surrogate.face_align import align_face
    from surrogate.runtime import default_repository

    recon = OnnxEstimator(str(default_repository()))
    out = np.full((len(frames), len(DEFAULT_SCHEMA)), np.nan, np.float32)
    crops, where = [], []
    for i, frame in enumerate(frames):
        aligned = align_face(frame, 64)
        if aligned is None:
            continue
        values = {**dict(zip(("yaw", "pitch", "roll"), aligned.reading.pose, strict=True)), **aligned.reading.aus()}
        for name, value in values.items():
            out[i, DEFAULT_SCHEMA.index(name)] = value
        crops.append(aligned.crop)
        where.append(i)
    if crops:
        out[where, DEFAULT_SCHEMA.index("gender")] = recon.predict(crops)[:, recon.schema.index("gender")]
    return out, ~np.isnan(out[:, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="an edited portrait corpus folder (read only)")
    parser.add_argument("--n", type=int, default=1000, help="rows to read (the first chunks)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache", default=None, help="an .npz to keep the readings in (refits skip reading)")
    args = parser.parse_args()

    from PIL import Image

    from surrogate.portrait_directions import AttributeDirections

    corpus = Path(args.corpus)
    directions = AttributeDirections.load(MODELS_DIR / DIRECTIONS_FILE)
    names = directions.names
    w, w0, rows = [], [], []
    for path in sorted((corpus / "latents").glob("*.npz")):
        with np.load(path) as latent:
            if tuple(str(n) for n in latent["direction_names"]) != names:
                raise SystemExit(f"{path}: edited along other directions than {names}")
            w.append(latent["w"])
            w0.append(latent["w"] - latent["coefficients"] @ directions.vectors)
            rows.append(latent["rows"])
        if sum(len(r) for r in rows) >= args.n:
            break
    w, w0, rows = np.concatenate(w)[: args.n], np.concatenate(w0)[: args.n], np.concatenate(rows)[: args.n]
    started = time.perf_counter()
    if args.cache and Path(args.cache).exists():
        with np.load(args.cache) as cached:
            if not np.array_equal(cached["rows"], rows):
                raise SystemExit(f"{args.cache} holds other rows")
            read, found = cached["read"], cached["found"]
    else:
        frames = [np.asarray(Image.open(corpus / "frames" / f"{int(r):06d}.jpg").convert("RGB")) for r in rows]
        read, found = readings(frames)
        if args.cache:
            np.savez_compressed(args.cache, rows=rows, read=read, found=found)
    seconds = time.perf_counter() - started
    columns = [DEFAULT_SCHEMA.index(n) for n in names]
    read = read[:, columns]
    predicted, targets = directions.predict(w0), directions.predict(w)
    limit = LIMIT_SPREADS * np.where(directions.spread > 0, directions.spread, 1.0 / LIMIT_SPREADS)
    fitted: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        if np.std(targets[found, k] - predicted[found, k]) < 1e-3:
            # Never edited in the data (the corpus keeps gender's read-out): b and c cannot be told apart,
            # so the reading is taken to follow the read-out of the final w (b = 0).
            design = np.stack([np.ones(found.sum()), targets[found, k]], 1)
            (a, c), *_ = np.linalg.lstsq(design, read[found, k], rcond=None)
            b = 0.0
            fit = design @ np.array([a, c])
        else:
            design = np.stack([np.ones(found.sum()), predicted[found, k], targets[found, k]], 1)
            (a, b, c), *_ = np.linalg.lstsq(design, read[found, k], rcond=None)
            fit = design @ np.array([a, b, c])
        fitted[name] = {"a": float(a), "b": float(b), "c": float(max(c, 0.05)), "limit": float(limit[k]),
                        "fit_r": float(np.corrcoef(fit, read[found, k])[0, 1])}
        print(f"{name:7s} a {a:7.3f} b {b:6.3f} c (gain) {c:6.3f}  r of the fit {fitted[name]['fit_r']:.3f}")
    print(f"{found.sum()}/{len(rows)} faces found; read in {seconds:.1f} s")
    calibration = Calibration.from_dict(fitted, names)
    calibration.save(args.out, model="read ~ a + b * readout(w0) + c * readout(w)", corpus=corpus.name,
                     rows=[int(rows[0]), int(rows[-1])], n=int(len(rows)), found=int(found.sum()),
                     readers="MediaPipe pose and AUs, recon gender",
                     fit_r={n: round(v["fit_r"], 4) for n, v in fitted.items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
