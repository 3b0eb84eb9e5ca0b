"""Step gender along the gender boundary's normal: rewrite the directions file's gender vector.

The last step of making ``surrogate/portrait_models/directions.npz`` (after ``surrogate data
portrait-directions`` and ``scripts/fit_identity_penalty.py``): gender's step becomes the boundary's normal,
less its part in the span of the other read-outs, scaled to one read-out unit
(``surrogate.portrait_directions.boundary_gender_vector``). Read-outs, the other steps, spreads and shifts
are kept, so ``readout @ vectors.T`` stays the identity (checked). Running it again changes nothing. The
calibration is fitted on renders along these directions, so refit it afterwards (docs/photoreal.md).

    PYTHONPATH=. .venv/bin/python scripts/gender_boundary_direction.py \\
        --directions surrogate/portrait_models/directions.npz \\
        --gender surrogate/portrait_models/gender_boundary.npz --out surrogate/portrait_models/directions.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from surrogate.assets import sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--directions", required=True, help="the directions file whose gender step is replaced")
    parser.add_argument("--gender", required=True, help="the gender boundary (surrogate data portrait-gender)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from surrogate.portrait_directions import (
        AttributeDirections,
        GenderBoundary,
        boundary_gender_vector,
        with_vector,
    )

    source = AttributeDirections.load(args.directions)
    boundary = GenderBoundary.load(args.gender)
    vector = boundary_gender_vector(source, boundary)
    directions = with_vector(source, "gender", vector)
    error = np.abs(directions.readout.astype(np.float64) @ directions.vectors.T.astype(np.float64)
                   - np.eye(len(directions.names))).max()
    if error > 1e-3:
        raise SystemExit(f"readout @ vectors.T is not the identity (max error {error:.2g})")
    k = directions.names.index("gender")
    normal = boundary.weights / np.linalg.norm(boundary.weights)
    print(f"gender step per read-out unit: length {np.linalg.norm(source.vectors[k]):.3f} -> "
          f"{np.linalg.norm(vector):.3f}; "
          f"cosine with the boundary's normal {source.vectors[k] @ normal / np.linalg.norm(source.vectors[k]):.3f} -> "
          f"{vector @ normal / np.linalg.norm(vector):.3f}")
    with np.load(args.directions) as data:
        kept = {key: data[key] for key in data.files
                if key not in ("names", "readout", "intercept", "vectors", "spread", "shift", "gender_vector",
                               "gender_boundary_sha256")}
    directions.save(args.out, **kept, gender_vector="boundary normal",
                    gender_boundary_sha256=sha256(Path(args.gender)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
