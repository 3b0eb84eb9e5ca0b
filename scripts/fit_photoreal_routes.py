"""Fit the photoreal method's style routes (surrogate/portrait_models/style_routes.npz, version 6).

The closed-form edit moves w0 by a step per attribute along its direction. w feeds all 23 affine layers of
the synthesis network, so a step in w also changes what the other layers draw: a turn or a smile changed
age, glasses or the whole person in about 6 of 16 same-seed pairs (docs/photoreal.md, "Routed edits").
The routes send each step to the style channels after those layers instead: the head's turn and tilt to
the coarse layers only (``--pose-layers``), each expression to its top channels, ranked by how far one
step moves a channel against that channel's spread over natural portraits (``--natural`` fresh seeds),
scaled to about the effect of the step in w (``surrogate.photoreal.EXPRESSION_CHANNELS``). Gender keeps
its step in w. No rendering: the affine layers are read from the synthesis network's IR, which this needs
(fetched at install), and the natural portraits' w from its mapping network, in a few seconds.

    PYTHONPATH=. .venv/bin/python scripts/fit_photoreal_routes.py \\
        --out surrogate/portrait_models/style_routes.npz

The calibration is fitted on renders of the routed edits, so refit it afterwards (docs/photoreal.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from surrogate.photoreal import POSE_LAYERS

NATURAL_SEED_BASE = 9_600_000_000  # fresh seeds, apart from the benchmarks' and the corpora's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default=None, help="a folder with other directions (default: the shipped)")
    parser.add_argument("--pose-layers", default="{}:{}".format(*POSE_LAYERS), help="first:last affine layer")
    parser.add_argument("--natural", type=int, default=2000, help="natural portraits for the channels' spread")
    parser.add_argument("--expressions", default=None, metavar="NAME:COUNT:SCALE,...",
                        help="the routed expressions (default: surrogate.photoreal.EXPRESSION_CHANNELS)")
    args = parser.parse_args()

    from surrogate.assets import PORTRAIT_GENERATOR, sha256
    from surrogate.photoreal import (
        DIRECTIONS_FILE,
        EXPRESSION_CHANNELS,
        MODELS_DIR,
        HalfResolutionGenerator,
        PhotorealBackend,
        fit_style_routes,
    )
    from surrogate.portraits import z_for_seeds

    first, last = (int(x) for x in args.pose_layers.split(":"))
    expressions = EXPRESSION_CHANNELS if args.expressions is None else {
        name: (int(count), float(scale)) for name, count, scale in
        (item.split(":") for item in args.expressions.split(",") if item)}
    backend = PhotorealBackend(models=args.models, routed=False)
    layers = HalfResolutionGenerator().layers
    natural = backend.base_latents(z_for_seeds([NATURAL_SEED_BASE + i for i in range(args.natural)]))
    routes = fit_style_routes(backend.directions, layers, natural, pose_layers=(first, last),
                              expressions=expressions)
    routes.save(args.out, directions_sha256=sha256(Path(args.models or MODELS_DIR) / DIRECTIONS_FILE),
                generator=f"{PORTRAIT_GENERATOR.package}=={PORTRAIT_GENERATOR.version}",
                pose_layers=[first, last], expressions=expressions, natural=args.natural,
                natural_seed_base=NATURAL_SEED_BASE, layer_stops=[layer.stop for layer in layers],
                command="scripts/fit_photoreal_routes.py --out " + args.out)
    for name, offset, routed in zip(routes.names, routes.offsets, routes.routed, strict=True):
        where = "w" if not routed else (f"{np.count_nonzero(offset)} channels in layers " + ",".join(
            str(i) for i, layer in enumerate(layers) if np.any(offset[layer.first:layer.stop])))
        print(f"{name:7s} -> {where}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
