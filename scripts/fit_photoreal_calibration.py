"""Fit the photoreal method's per-attribute calibration (surrogate/portrait_models/photoreal_calibration.npz).

The data are portraits that the directions were not fitted on: the edited corpus (``surrogate data portraits
--out data/portraits_p2 --directions ...``), whose every face stores its seed's w0 (w minus its edit) and its
edited w, and whose 512 px frames (rolled) are read here, read-only: MediaPipe for pose and AUs, the shipped
recon network for gender on the aligned 64 px grey crop (as ``surrogate attributes extract`` reads it). Per
attribute, ``read ~ a + b * readout(w0) + c * readout(w)`` is fitted by least squares over the faces found;
the surrogate inverts it. No rendering: reading ~1,000 frames takes a few minutes.

The corpus may have been edited along other directions than the shipped ones (the shipped ones may since
have been refitted on the corpus itself): ``--corpus-directions`` names the file it was edited with (checked
against the corpus's ``options.json``), which gives each face's w0; the read-outs are the shipped
directions'. ``--rows`` picks corpus rows the shipped directions were not fitted on.

    PYTHONPATH=. .venv/bin/python scripts/fit_photoreal_calibration.py --corpus data/portraits_p2 \
        --rows 8032:10032 --corpus-directions data/directions_p2.npz \
        --cache runs/calibration_readings.npz --out surrogate/portrait_models/photoreal_calibration.npz

A corpus edited along *other* directions calibrates badly: its edits are not the method's (version 2: gains
~1 on the corpus, 0.2-0.8 on the method's own edits). ``--renders`` fits on the method's own renders instead
(``benchmarks/photoreal_identity.py --uncalibrated``, which saves each render's read-outs and readings); that
is how the shipped calibration is made:

    PYTHONPATH=. .venv/bin/python scripts/fit_photoreal_calibration.py --renders renders.npz \
        --out surrogate/portrait_models/photoreal_calibration.npz

``--refinement N`` then measures the refinement round's gain (``step``) on N fresh renders of corpus readings
(rows the directions were not fitted on): each is rendered with the closed-form edit and read, its targets
corrected once with the current step gains, rendered and read again; per attribute, the reading's change is
regressed (through 0) on the targets' change. The calibration's other entries are kept:

    PYTHONPATH=. .venv/bin/python scripts/fit_photoreal_calibration.py --refinement 100 \
        --pool data/portraits_p2/attributes_images128c.csv --rows 8032:9232 \
        --out surrogate/portrait_models/photoreal_calibration.npz

``--models DIR`` fits for another folder of model files (a trial's directions, a copy of the shipped folder
with one file replaced) instead of the shipped one; ``benchmarks/photoreal_identity.py --models DIR`` makes
its renders.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from surrogate.assets import sha256
from surrogate.photoreal import DIRECTIONS_FILE, MODELS_DIR, Calibration, step_limits
from surrogate.schema import DEFAULT_SCHEMA


def readings(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(N, A) attributes read from frame files one by one (MediaPipe pose and AUs, recon gender; NaN: no face)."""
    from PIL import Image

    from surrogate.extract import OnnxEstimator
    from surrogate.face_align import align_face
    from surrogate.runtime import default_repository

    recon = OnnxEstimator(str(default_repository()))
    out = np.full((len(paths), len(DEFAULT_SCHEMA)), np.nan, np.float32)
    crops, where = [], []
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            aligned = align_face(np.asarray(image.convert("RGB")), 64)
        if aligned is None:
            continue
        for name, value in aligned.reading.attributes().items():
            out[i, DEFAULT_SCHEMA.index(name)] = value
        crops.append(aligned.crop)
        where.append(i)
    if crops:
        out[where, DEFAULT_SCHEMA.index("gender")] = recon.predict(crops)[:, recon.schema.index("gender")]
    return out, ~np.isnan(out[:, 0])


def corpus_data(args: argparse.Namespace, directions) -> tuple[np.ndarray, ...]:
    """(read-out of w0, read-out of w, readings (N, A), found) of held-out rows of an edited corpus."""
    from surrogate.portrait_directions import AttributeDirections

    corpus = Path(args.corpus)
    edited_with_path = Path(args.corpus_directions) if args.corpus_directions else args.models / DIRECTIONS_FILE
    edited_with = AttributeDirections.load(edited_with_path)
    options = json.loads((corpus / "options.json").read_text())
    if options.get("directions_sha256") != sha256(edited_with_path):
        raise SystemExit(f"{corpus} was not edited with {edited_with_path} (options.json's directions_sha256 differs)")
    start, stop = (int(x) for x in args.rows.split(":"))
    w, w0, rows = [], [], []
    for path in sorted((corpus / "latents").glob("*.npz")):
        with np.load(path) as latent:
            keep = (latent["rows"] >= start) & (latent["rows"] < stop)
            if not keep.any():
                continue
            if tuple(str(n) for n in latent["direction_names"]) != edited_with.names:
                raise SystemExit(f"{path}: edited along other directions than {edited_with.names}")
            w.append(latent["w"][keep])
            w0.append(latent["w"][keep] - latent["coefficients"][keep] @ edited_with.vectors)
            rows.append(latent["rows"][keep])
    if not rows:
        raise SystemExit(f"{corpus}: no rendered rows in {args.rows}")
    w, w0, rows = np.concatenate(w), np.concatenate(w0), np.concatenate(rows)

    def frame_path(row: int) -> Path:
        return corpus / "frames" / f"{int(row):06d}.jpg"

    # the render may be writing the last chunk: keep the rows whose frame is on disk
    done = np.array([frame_path(r).exists() for r in rows], bool)
    w, w0, rows = w[done], w0[done], rows[done]
    started = time.perf_counter()
    if args.cache and Path(args.cache).exists():
        with np.load(args.cache) as cached:
            if not np.array_equal(cached["rows"], rows):
                raise SystemExit(f"{args.cache} holds other rows")
            read, found = cached["read"], cached["found"]
    else:
        read, found = readings([frame_path(r) for r in rows])
        if args.cache:
            np.savez_compressed(args.cache, rows=rows, read=read, found=found)
    print(f"{found.sum()}/{len(rows)} faces found in corpus rows {rows[0]}-{rows[-1]}; read in "
          f"{time.perf_counter() - started:.1f} s")
    args.source = {"corpus": corpus.name, "rows": [int(rows[0]), int(rows[-1])]}
    return directions.predict(w0), directions.predict(w), read, found


def render_data(args: argparse.Namespace, directions) -> tuple[np.ndarray, ...]:
    """The same from the method's own renders (``benchmarks/photoreal_identity.py``, best ``--uncalibrated``).

    Whatever calibration made them, each render's read-outs of w0 and of its edited w are what the model
    relates the reading to; only the directions must be those of ``--models``.
    """
    expected = sha256(args.models / DIRECTIONS_FILE)
    parts: dict[str, list[np.ndarray]] = {"predicted": [], "targets": [], "read": [], "found": []}
    for path in args.renders:
        with np.load(path) as data:
            if str(data["directions_sha256"]) != expected:
                raise SystemExit(f"{path}: renders of other directions than those of {args.models}")
            read = np.full((len(data["read"]), len(DEFAULT_SCHEMA)), np.nan, np.float32)
            for j, name in enumerate(str(n) for n in data["read_names"]):
                read[:, DEFAULT_SCHEMA.index(name)] = data["read"][:, j]
            read[:, DEFAULT_SCHEMA.index("gender")] = data["gender"]
            for key, value in (("predicted", data["predicted"]), ("targets", data["targets"]), ("read", read),
                               ("found", data["found"].astype(bool))):
                parts[key].append(value)
    predicted, targets, read, found = (np.concatenate(parts[k]) for k in ("predicted", "targets", "read", "found"))
    print(f"{found.sum()}/{len(found)} renders with a face in {len(args.renders)} file(s)")
    args.source = {"renders": [Path(p).name for p in args.renders]}
    return predicted, targets, read, found


def fit(names: tuple[str, ...], predicted: np.ndarray, targets: np.ndarray, read: np.ndarray, found: np.ndarray,
        limit: np.ndarray) -> dict[str, dict[str, float]]:
    """Per attribute: least squares ``read ~ a + b * readout(w0) + c * readout(w)`` over the faces found."""
    fitted: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        ok = found & np.isfinite(read[:, k])  # a reader may not have read every render
        if not ok.any():
            raise SystemExit(f"no reading of {name} in the data")
        if np.std(targets[ok, k] - predicted[ok, k]) < 1e-3:
            # Never edited in the data (the corpus keeps gender's read-out): b and c cannot be told apart,
            # so the reading is taken to follow the read-out of the final w (b = 0).
            design = np.stack([np.ones(ok.sum()), targets[ok, k]], 1)
            (a, c), *_ = np.linalg.lstsq(design, read[ok, k], rcond=None)
            b = 0.0
            fitted_values = design @ np.array([a, c])
        else:
            design = np.stack([np.ones(ok.sum()), predicted[ok, k], targets[ok, k]], 1)
            (a, b, c), *_ = np.linalg.lstsq(design, read[ok, k], rcond=None)
            fitted_values = design @ np.array([a, b, c])
        fitted[name] = {"a": float(a), "b": float(b), "c": float(max(c, 0.05)), "limit": float(limit[k]),
                        "fit_r": float(np.corrcoef(fitted_values, read[ok, k])[0, 1])}
        print(f"{name:7s} a {a:7.3f} b {b:6.3f} c (gain) {c:6.3f}  r of the fit {fitted[name]['fit_r']:.3f} "
              f"({ok.sum()} faces)")
    return fitted


REFINEMENT_SEED_BASE = 9_100_000_000  # fresh seeds, apart from the benchmarks' and the corpora's


def refinement_steps(args: argparse.Namespace) -> None:
    """Fit each attribute's refinement gain on fresh renders and add it to the shipped calibration."""
    from benchmarks.bench_photoreal import read_rows
    from surrogate.landmarks import readings_array
    from surrogate.photoreal import CALIBRATION_FILE, PhotorealBackend
    from surrogate.portraits import z_for_seeds

    pool = read_rows(args.pool, args.rows)
    values = pool[np.random.default_rng(11).choice(len(pool), args.refinement, replace=False)]
    backend = PhotorealBackend(refine=0, models=args.models)
    backend.calibration = dataclasses.replace(backend.calibration, limit=step_limits(backend.directions))
    names = backend.directions.names
    w0 = backend.base_latents(z_for_seeds([REFINEMENT_SEED_BASE + i for i in range(len(values))]))
    requested = backend.requested(values)
    rolls = values[:, DEFAULT_SCHEMA.index("roll")]

    before = backend.targets(requested, w0)
    _, first = backend.render_edit(w0, before, rolls)
    after = before.copy()
    for i, reading in enumerate(first):
        if reading is not None:
            after[i:i + 1] = backend.corrected(before[i:i + 1], requested[i:i + 1], w0[i:i + 1], reading)
    _, second = backend.render_edit(w0, after, rolls)
    moved, read_first, read_second = after - before, readings_array(first, names), readings_array(second, names)
    step = backend.calibration.c.copy()  # gender: MediaPipe does not read it, its rounds never correct it
    for k, name in enumerate(names):
        ok = np.isfinite(read_first[:, k]) & np.isfinite(read_second[:, k])
        if ok.sum() < 10:
            continue
        dt, dr = moved[ok, k], read_second[ok, k] - read_first[ok, k]
        step[k] = max(float(dt @ dr / max(dt @ dt, 1e-9)), 0.05)
        r_before, r_after = (float(np.corrcoef(requested[ok, k], x[ok, k])[0, 1]) for x in (read_first, read_second))
        print(f"{name:7s} step gain {step[k]:6.3f} (c {backend.calibration.c[k]:.3f}); r requested vs read "
              f"{r_before:.3f} -> {r_after:.3f} ({ok.sum()} faces)")
    calibration = dataclasses.replace(backend.calibration, step=step.astype(np.float32))
    with np.load(args.models / CALIBRATION_FILE) as data:
        info = json.loads(str(data["info"])) if "info" in data else {}
    info.pop("refinement", None)  # a refit replaces the last refinement's record
    calibration.save(args.out, **info, refinement={"pool": Path(args.pool).name, "rows": args.rows,
                                                   "n": len(values), "seed_base": REFINEMENT_SEED_BASE})
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="an edited portrait corpus folder (read only)")
    source.add_argument("--renders", nargs="+", help="uncalibrated renders' readings (photoreal_identity.py)")
    source.add_argument("--refinement", type=int, help="fit the refinement gains on this many fresh renders")
    parser.add_argument("--pool", help="with --refinement: a canonical attribute CSV of corpus readings")
    parser.add_argument("--rows", default="0:1000", help="corpus rows START:STOP to read (rows not rendered yet are "
                        "skipped)")
    parser.add_argument("--corpus-directions", default=None,
                        help="the directions file the corpus was edited with (default: that of --models)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", type=Path, default=MODELS_DIR,
                        help="the folder of the directions (and, with --refinement, the calibration) to fit for; "
                        "default: the shipped one")
    parser.add_argument("--cache", default=None, help="an .npz to keep the corpus readings in (refits skip reading)")
    args = parser.parse_args()
    if args.refinement:
        if not args.pool:
            parser.error("--refinement needs --pool")
        refinement_steps(args)
        return

    from surrogate.portrait_directions import AttributeDirections

    directions = AttributeDirections.load(args.models / DIRECTIONS_FILE)
    names = directions.names
    predicted, targets, read, found = (corpus_data if args.corpus else render_data)(args, directions)
    read = read[:, [DEFAULT_SCHEMA.index(n) for n in names]]
    fitted = fit(names, predicted, targets, read, found, step_limits(directions))
    calibration = Calibration.from_dict(fitted, names)
    calibration.save(args.out, model="read ~ a + b * readout(w0) + c * readout(w)", **args.source,
                     directions_sha256=sha256(args.models / DIRECTIONS_FILE),
                     n=int(len(found)), found=int(found.sum()),
                     readers="MediaPipe pose and AUs, recon gender (the default repository's latest version)",
                     fit_r={n: round(v["fit_r"], 4) for n, v in fitted.items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
