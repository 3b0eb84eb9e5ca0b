"""A second opinion on attribute labels: face geometry from dlib's 68 landmarks, correlated with an attribute file.

MediaPipe labels the portrait corpus and judges the surrogates; this checks it (and any generator) against
an estimator with nothing in common: dlib's 68-point shape predictor (the audit's dlib install) on the
aligned crops, turned into plain geometric measures, each expected to follow one attribute:

| measure | follows | sign |
|---|---|---|
| nose offset from the face's midline / face width | yaw | + |
| nose drop below the eye line / eye-to-chin | pitch | + |
| angle of the eye line (degrees) | roll | + |
| brow-to-upper-lid distance / eye distance | AU04 | - (lowered brows) |
| eye aperture / eye width | AU05 / AU07 | + / - |
| mouth width / eye distance, lip-corner lift | AU12 | + |
| red-lip height (outer to inner lip line, upper + lower) / eye distance | AU23 | - (pressed, thinned lips) |

    .venv/bin/python benchmarks/dlib_agreement.py DIR/attributes.csv --images DIR [--n 500]

DIR/attributes.csv is the canonical CSV (``file`` column relative to --images). Prints Pearson r of each
measure with its attribute and the share of faces dlib's landmarks could be fitted to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from surrogate.adapters import read_attributes  # noqa: E402
from surrogate.imageio import load_image  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402

SIDE = 256


def measures(points: np.ndarray) -> dict[str, float]:
    """Geometric measures of one face from its 68 dlib landmarks (x, y pixels)."""
    eye_r, eye_l = points[36:42].mean(0), points[42:48].mean(0)
    eye_distance = np.linalg.norm(eye_l - eye_r)
    eyes = (eye_r + eye_l) / 2
    jaw = points[0:17]
    width = np.linalg.norm(jaw[16] - jaw[0])
    chin = points[8]
    nose = points[30]
    brow_to_lid = (np.linalg.norm(points[17:22].mean(0) - points[37:39].mean(0))
                   + np.linalg.norm(points[22:27].mean(0) - points[43:45].mean(0))) / 2
    aperture = (np.linalg.norm(points[37] - points[41]) + np.linalg.norm(points[38] - points[40])
                + np.linalg.norm(points[43] - points[47]) + np.linalg.norm(points[44] - points[46])) / 4
    eye_width = (np.linalg.norm(points[39] - points[36]) + np.linalg.norm(points[45] - points[42])) / 2
    lip_centre = (points[51] + points[57]) / 2
    corners = (points[48] + points[54]) / 2
    # the red of the lips: outer lip line to inner lip line at the middle, which pressing the lips thins
    red_lip = np.linalg.norm(points[51] - points[62]) + np.linalg.norm(points[57] - points[66])
    angle = np.degrees(np.arctan2(eye_l[1] - eye_r[1], eye_l[0] - eye_r[0]))
    return {
        # yaw > 0 turns the nose towards the image's left: the nose sits left of the jaw's midpoint
        "yaw": float(((jaw[0] + jaw[16]) / 2 - nose)[0] / width),
        "pitch": float((nose[1] - eyes[1]) / max(chin[1] - eyes[1], 1e-6)),
        "roll": float(angle),
        "AU04": float(-brow_to_lid / eye_distance),
        "AU05": float(aperture / eye_width),
        "AU07": float(-aperture / eye_width),
        "AU12": float(np.linalg.norm(points[54] - points[48]) / eye_distance
                      + (lip_centre[1] - corners[1]) / eye_distance),
        "AU23": float(-red_lip / eye_distance),
    }


class DlibGeometry:
    """68 landmarks on an aligned crop (the crop's central box, no detector) -> ``measures``."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as models

        self.dlib = dlib
        self.predictor = dlib.shape_predictor(models.pose_predictor_model_location())
        self.detector = dlib.get_frontal_face_detector()

    def read(self, image: np.ndarray) -> dict[str, float] | None:
        from PIL import Image

        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        rgb = np.asarray(Image.fromarray(rgb).resize((SIDE, SIDE), Image.BICUBIC))
        found = self.detector(rgb, 0)
        if not found:
            return None
        box = max(found, key=lambda r: r.width() * r.height())
        shape = self.predictor(rgb, box)
        return measures(np.array([(p.x, p.y) for p in shape.parts()], np.float64))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attributes", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = read_attributes(args.attributes, schema=DEFAULT_SCHEMA)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(table.values), size=min(args.n, len(table.values)), replace=False)
    reader = DlibGeometry()
    rows, values = [], []
    for i in pick:
        reading = reader.read(load_image(args.images / table.files[i]))
        if reading is not None:
            rows.append(reading)
            values.append(table.values[i])
    values = np.array(values)
    print(f"dlib fitted {len(rows)} of {len(pick)} faces ({len(rows) / len(pick):.1%})")
    print("| attribute | r with its dlib measure |\n|---|---|")
    for name in rows[0]:
        measure = np.array([r[name] for r in rows])
        r = np.corrcoef(values[:, DEFAULT_SCHEMA.index(name)], measure)[0, 1]
        print(f"| {name} | {r:+.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
