"""Attribute directions that leave the person alone: re-solve the shipped directions with an identity penalty.

The photoreal method moves w0 along the attribute directions; the plain (pseudo-inverse) directions are the
smallest steps in w that move the read-out, but nothing stops a small step from being one that dlib reads as
another person. Here a linear model of dlib's face descriptor from w (ridge, on portraits of the natural
corpus: their w and their framed 128 px colour crops) is fitted, and the directions are re-solved as the
smallest steps in the metric ``|dw|^2 + weight * |J dw|^2 / s1^2`` (``J`` the descriptor model, ``s1`` its
largest singular value; ``surrogate.portrait_directions.conditioned_directions``). Every step still moves
the read-out exactly as before (read-out, intercept, spread and shift are kept), so the calibration, fitted
in read-out units, still applies; only the path through w changes.

    PYTHONPATH=. .venv/bin/python scripts/fit_identity_penalty.py --corpus data/portraits_p1 \\
        --directions D.npz --weight 30 --cache runs/p1_dlib.npz \\
        --out surrogate/portrait_models/directions.npz

(D.npz: the plain conditioned directions, ``surrogate data portrait-directions PART... --out D.npz``.)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from surrogate.assets import sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a natural portrait corpus (latents.npz, images128c/)")
    parser.add_argument("--directions", required=True, help="the directions file to re-solve (read-out kept)")
    parser.add_argument("--weight", type=float, default=30.0, help="identity penalty, relative to a plain step")
    parser.add_argument("--l2", type=float, default=10.0, help="ridge penalty of the descriptor model")
    parser.add_argument("--cache", default=None, help="an .npz to keep the descriptors in")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from surrogate.portrait_directions import AttributeDirections, conditioned_directions, fit_readout, held_out_r

    corpus = Path(args.corpus)
    with np.load(corpus / "latents.npz") as latents:
        rows, w, found = latents["rows"], latents["w"], latents["found"].astype(bool)
    rows, w = rows[found], w[found]
    started = time.perf_counter()
    if args.cache and Path(args.cache).exists():
        with np.load(args.cache) as cached:
            if not np.array_equal(cached["rows"], rows):
                raise SystemExit(f"{args.cache} holds other rows")
            descriptors = cached["descriptors"]
    else:
        from PIL import Image

        from surrogate.face_identity import DlibIdentity

        identity = DlibIdentity()
        crops = []
        for r in rows:
            with Image.open(corpus / "images128c" / f"{int(r):06d}.png") as image:
                crops.append(np.asarray(image.convert("RGB")))
        descriptors, _ = identity.describe(crops)
        if args.cache:
            np.savez_compressed(args.cache, rows=rows, descriptors=descriptors)
    print(f"{len(rows)} descriptors in {time.perf_counter() - started:.0f} s")
    r = held_out_r(w, descriptors, args.l2)
    print(f"descriptor from w: held-out r median {np.median(r):.3f} (range {r.min():.3f}-{r.max():.3f})")
    model, _ = fit_readout(w, descriptors, args.l2)
    largest = np.linalg.svd(model.astype(np.float64), compute_uv=False)[0]
    penalty = np.sqrt(args.weight) * model / largest
    plain = AttributeDirections.load(args.directions)
    vectors = conditioned_directions(plain.readout, penalty)
    for k, name in enumerate(plain.names):
        print(f"  {name:6s} step norm per read-out unit {np.linalg.norm(plain.vectors[k]):.3f} -> "
              f"{np.linalg.norm(vectors[k]):.3f}; descriptor change {np.linalg.norm(model @ plain.vectors[k]):.3f} "
              f"-> {np.linalg.norm(model @ vectors[k]):.3f}")
    directions = AttributeDirections(plain.names, plain.readout, plain.intercept, vectors, plain.spread, plain.shift)
    with np.load(args.directions) as source:
        kept = {k: source[k] for k in ("rows", "held_out_r", "l2") if k in source.files}
    directions.save(args.out, **kept, identity_weight=args.weight, identity_l2=args.l2,
                    identity_rows=len(rows), identity_held_out_r_median=float(np.median(r)),
                    plain_sha256=sha256(Path(args.directions)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
