"""How the attribute directions in w move what MediaPipe reads: the entanglement table (docs/portraits.md).

For N portraits (seeds not in the corpus), each direction is stepped by -step and +step (attribute units)
from the face's own w; MediaPipe reads both ends. Per direction it reports the reading's change of its
own attribute per requested unit (the gain; 1 = the edit lands exactly), the change of every other
attribute per requested unit (entanglement), and dlib's descriptor distance between the two ends
(identity drift; dlib calls two photos the same person below 0.6). The plain per-attribute regression
vectors, scaled to the same read-out step, are measured beside the conditioned directions. With
--third-party, the cosine of each direction with the nearest of ../shared/data/stylegan_directions
(research-only, compared, never used).

    .venv/bin/python benchmarks/portrait_directions.py --directions D.npz --n 8 --out docs/portraits_entanglement.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from surrogate.face_align import align_face  # noqa: E402
from surrogate.landmarks import FaceLandmarks  # noqa: E402
from surrogate.portrait_directions import AttributeDirections, GenderBoundary  # noqa: E402
from surrogate.portraits import PortraitGenerator  # noqa: E402

STEPS = {"yaw": 15.0, "pitch": 8.0, "AU04": 1.5, "AU05": 1.0, "AU06": 0.5, "AU07": 1.0, "AU12": 1.5, "AU23": 1.0,
         "gender": 0.4}
READ = ("yaw", "pitch", "roll", "AU04", "AU05", "AU06", "AU07", "AU12", "AU23", "gender")
THIRD_PARTY = {"yaw": "angle_horizontal", "pitch": "angle_pitch", "AU12": "smile", "gender": "gender",
               "AU04": "emotion_angry"}


def read(reader: FaceLandmarks, gender: GenderBoundary, images: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = np.full((len(images), len(READ)), np.nan, np.float32)
    for i, image in enumerate(images):
        face = reader.read(image)
        if face is None:
            continue
        out[i, :-1] = face.array(READ[:-1])
    out[:, -1] = gender.probability(w)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directions", type=Path, required=True)
    parser.add_argument("--gender", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=900_000)
    parser.add_argument("--third-party", type=Path, default=None, help="../shared/data/stylegan_directions")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file for the table.")
    args = parser.parse_args()

    directions = AttributeDirections.load(args.directions)
    gender = GenderBoundary.load(args.gender)
    generator = PortraitGenerator(batch=4)
    reader = FaceLandmarks()
    dlib = None
    try:
        from surrogate.face_identity import DlibIdentity

        dlib = DlibIdentity()
    except Exception as exc:  # noqa: BLE001 - the identity column is optional
        print(f"no identity column ({exc})", file=sys.stderr)
    base = generator.w([args.seed + i for i in range(args.n)])
    lines = ["| direction | kind | gain | " + " | ".join(f"d{n}" for n in READ) + " | identity drift |",
             "|---|---|---|" + "---|" * len(READ) + "---|"]
    for k, name in enumerate(directions.names):
        step = STEPS.get(name, 1.0)
        plain = directions.readout[k] / float(directions.readout[k] @ directions.readout[k])  # read-out +1
        for kind, vector in (("conditioned", directions.vectors[k]), ("plain", plain)):
            lo, hi = base - step * vector, base + step * vector
            images = generator.render(np.concatenate([lo, hi]), side=512)
            values = read(reader, gender, images, np.concatenate([lo, hi]))
            delta = (values[args.n:] - values[: args.n]) / (2 * step)
            mean = np.nanmean(delta, axis=0)
            own = READ.index(name)
            drift = float("nan")
            if dlib is not None:
                crops = [face.crop if (face := align_face(im, 128, channels=3, reader=reader)) is not None
                         else im for im in images]
                descriptors, _ = dlib.describe(crops)
                drift = float(np.linalg.norm(descriptors[: args.n] - descriptors[args.n:], axis=1).mean())
            cells = [f"**{mean[j]:+.2f}**" if j == own else f"{mean[j]:+.2f}" for j in range(len(READ))]
            lines.append(f"| {name} | {kind} | {mean[own]:.2f} | " + " | ".join(cells) + f" | {drift:.2f} |")
            print(lines[-1], flush=True)
    if args.third_party:
        lines += ["", "| direction | third-party direction | cosine (conditioned) | cosine (plain) |",
                  "|---|---|---|---|"]
        for k, name in enumerate(directions.names):
            if name not in THIRD_PARTY:
                continue
            theirs = np.load(args.third_party / f"{THIRD_PARTY[name]}.npy").reshape(-1, 512)[0]
            cos = [float(v @ theirs / np.linalg.norm(v) / np.linalg.norm(theirs))
                   for v in (directions.vectors[k], directions.readout[k])]
            lines.append(f"| {name} | {THIRD_PARTY[name]} | {cos[0]:+.2f} | {cos[1]:+.2f} |")
    reader.close()  # before interpreter shutdown, which MediaPipe's finaliser does not survive
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
