"""Pack the part of ICT-FaceKit Light the 3-D path uses into ``surrogate/third_party/ict_facekit/ict_face.npz``.

    python scripts/pack_ict_facekit.py [--source ../shared/data/ict_facekit] [--out surrogate/third_party/ict_facekit]

Input: the packed kit (``ict_light_deltas_face_head.npz``, see its README: the face and head region of the
generic neutral mesh, per-shape vertex deltas). Output (values unchanged, only selected and rounded):
``neutral`` (V, 3) float32, ``quads`` (Q, 4) int32, ``landmarks`` (68,) int32 (the kit's iBUG-68 vertices),
``ident`` (N_IDENTITY, V, 3) float16 (the leading identity PCA shapes; later ones move no vertex by more
than a third of a pixel at 64 px), ``expr`` (E, V, 3) float16 with ``expr_names`` (only the blendshapes
``surrogate.ict_model.AU_BLENDSHAPES`` uses). float16 keeps the deltas to about 0.002 cm.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from surrogate.face_model import N_IDENTITY
from surrogate.ict_model import AU_BLENDSHAPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--source", type=Path, default=root.parent / "shared" / "data" / "ict_facekit")
    parser.add_argument("--out", type=Path, default=root / "surrogate" / "third_party" / "ict_facekit")
    args = parser.parse_args()
    kit = np.load(args.source / "ict_light_deltas_face_head.npz")
    names = [str(n) for n in kit["expr_names"]]
    used = sorted({shape for mapping in AU_BLENDSHAPES.values() for shape, _ in mapping}, key=names.index)
    landmarks = json.loads((args.source / "vertex_indices.json").read_text())["idx_to_landmark_verts"]
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / "ict_face.npz",
        neutral=kit["neutral"].astype(np.float32),
        quads=kit["faces"].astype(np.int32),
        landmarks=np.asarray(landmarks, np.int32),
        ident=kit["ident"][:N_IDENTITY].astype(np.float16),
        expr=np.stack([kit["expr"][names.index(n)] for n in used]).astype(np.float16),
        expr_names=np.asarray(used),
    )
    shutil.copy(args.source / "LICENSE", args.out / "LICENSE")
    print(f"wrote {args.out / 'ict_face.npz'}: {len(used)} blendshapes, {N_IDENTITY} identity shapes")


if __name__ == "__main__":
    main()
