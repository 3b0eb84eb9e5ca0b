"""Do outside models read the requested attributes back from 3-D surrogates? Both face models, same inputs.

    PYTHONPATH=. .venv/bin/python benchmarks/face_model_readback.py [--n 300] [--size 64] [--reader dlib|mediapipe]
        [--mediapipe-model ~/.cache/surrogate-faces/face-landmarker-0.1.1/face_landmarker.task] [--reader-size 256]
    PYTHONPATH=. .venv/bin/python benchmarks/face_model_readback.py --reader recon [--recon-version 3] --no-emotion

Draws N attribute rows (yaw, pitch, roll uniform in +-``--yaw``/``--pitch``/``--roll`` degrees; each of the
six AUs 0 with probability 0.4, else uniform 0..5, independently; gender uniform), renders each row with
its seed by every ``--face-models`` model, and reads the faces back with a reader nobody here trained.
``--pool CSV --rows A:B`` draws the rows from held-out portrait-corpus readings instead, as the photoreal
benchmark does: there the eye AUs co-occur as they do on faces (a row never asks for wide-open and
tightened lids at full strength at once, which the independent draw often does).

* ``dlib``: dlib's HOG face detector and its 68-landmark predictor (the face-recognition-models wheel the
  audit uses), on the face upscaled to 256 px. The attributes are read as landmark geometry: roll = the
  angle of the line between the eye centres; yaw = the nose tip's horizontal offset from the eye midpoint,
  pitch = its vertical offset (both over the inter-ocular distance); AU12 = lip-corner lift over the
  mouth centre; AU04 = -(brow to eye distance); AU05 = upper lids above the eye corners; AU07 = lower lids
  above the eye corners; AU23 = -(height of the lip red, outer minus inner contour). Plus joy: P(happy)
  of the ``fer`` classifier (audit/emotion.py) against AU12.
* ``mediapipe``: MediaPipe's FaceLandmarker (``mediapipe`` must be importable; give the ``.task`` model):
  its own blendshapes (AU04 browDown, AU05 eyeWide, AU07 eyeSquint, AU12 mouthSmile, AU23 mouthPress,
  mean of left and right) and the pose of its facial transformation matrix.
* ``recon``: gender only, as P(male) of the project's reconstruction network ``--recon-version`` of
  ``model_repository`` (version 3 was trained on photoreal portraits only, never on these renders), on the
  face found and framed by the project's alignment (``surrogate.face_align.align_face``, MediaPipe) in
  the upscaled image. Reported as ROC AUC for requested P(male) > 0.5 (and r against it).

Prints, per face model: the share of faces found and Pearson r (requested vs read) per attribute over the
faces found. Pose signs follow each reader's own convention, so compare |r|. With ``mediapipe``, whose
readings are in the request's units (degrees, the 0-5 AU scale), a second row gives the least-squares slope
of the reading on the request: 1 when a face reads as strongly as it was asked to.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from surrogate.stats import auc, pearson

AUS = ("AU04", "AU05", "AU06", "AU07", "AU12", "AU23")
DEFAULT_TASK = Path.home() / ".cache" / "surrogate-faces" / "face-landmarker-0.1.1" / "face_landmarker.task"


def draw_rows(n: int, rng: np.random.Generator, yaw: float, pitch: float, roll: float) -> dict[str, np.ndarray]:
    rows = {"yaw": rng.uniform(-yaw, yaw, n), "pitch": rng.uniform(-pitch, pitch, n),
            "roll": rng.uniform(-roll, roll, n), "gender": rng.uniform(0.0, 1.0, n)}
    for au in AUS:
        rows[au] = np.where(rng.uniform(size=n) < 0.4, 0.0, rng.uniform(0.0, 5.0, n))
    return rows


def draw_pool(path: str, rows: str, n: int, seed: int) -> np.ndarray:
    """``n`` (N, A) DEFAULT_SCHEMA rows drawn from rows start:stop of a canonical attribute CSV (with
    replacement only where the pool is smaller than ``n``)."""
    from benchmarks.bench_photoreal import read_rows

    pool = read_rows(path, rows)
    return pool[np.random.default_rng(seed).choice(len(pool), n, replace=len(pool) < n)]


def upscale(face: np.ndarray, size: int) -> np.ndarray:
    """RGB face upscaled (bicubic) to ``size`` pixels; 0 keeps its own size."""
    from PIL import Image

    rgb = face if face.ndim == 3 else np.repeat(face[..., None], 3, axis=2)
    if not size or rgb.shape[0] == size:
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))


class DlibReader:
    """68 landmarks (upscaled face) -> the geometry above; NaN rows where no face is found."""

    names = ("yaw", "pitch", "roll", "AU04", "AU05", "AU07", "AU12", "AU23")

    def __init__(self, size: int) -> None:
        import dlib
        import face_recognition_models as models

        self.size = size
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(models.pose_predictor_model_location())

    def read(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        out = {name: np.full(len(faces), np.nan) for name in self.names}
        for i, face in enumerate(faces):
            rgb = upscale(face, self.size)
            boxes = self.detector(rgb, 0)
            if not len(boxes):
                continue
            box = max(boxes, key=lambda b: b.area())
            shape = self.predictor(rgb, box)
            p = np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], np.float64)
            left, right = p[36:42].mean(axis=0), p[42:48].mean(axis=0)
            mid = (left + right) / 2.0
            iod = float(np.linalg.norm(right - left))
            out["roll"][i] = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
            # Vectors in the face's own frame (rotated back by the roll), so roll does not leak into the rest.
            c, s = math.cos(-math.radians(out["roll"][i])), math.sin(-math.radians(out["roll"][i]))
            q = (p - mid) @ np.array([[c, s], [-s, c]]) / iod
            out["yaw"][i] = -q[30, 0]
            out["pitch"][i] = q[30, 1]
            mouth_centre = (q[[51, 57, 62, 66], 1]).mean()
            out["AU12"][i] = mouth_centre - q[[48, 54], 1].mean()
            out["AU04"][i] = -(q[[37, 38, 43, 44], 1].mean() - q[17:27, 1].mean())
            corners = q[[36, 39, 42, 45], 1].mean()
            out["AU05"][i] = corners - q[[37, 38, 43, 44], 1].mean()  # upper lid raised
            out["AU07"][i] = corners - q[[40, 41, 46, 47], 1].mean()  # lower lid raised
            # Lip red thinner: outer minus inner lip contour, upper and lower.
            out["AU23"][i] = -(q[[57, 58, 56], 1].mean() - q[[66, 67, 65], 1].mean()
                               + q[[61, 62, 63], 1].mean() - q[[50, 51, 52], 1].mean())
        return out


class MediaPipeReader:
    """The project's MediaPipe reader (surrogate.landmarks: pose in the schema's convention, calibrated AUs);
    NaN rows where no face is found."""

    names = ("yaw", "pitch", "roll", "AU04", "AU05", "AU07", "AU12", "AU23")

    def __init__(self, model: Path, size: int) -> None:
        from surrogate.landmarks import FaceLandmarks

        self.reader = FaceLandmarks(model)
        self.size = size

    def read(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        out = {name: np.full(len(faces), np.nan) for name in self.names}
        for i, face in enumerate(faces):
            reading = self.reader.read(upscale(face, self.size))
            if reading is None:
                continue
            values = reading.attributes()
            for name in self.names:
                out[name][i] = values[name]
        return out


class ReconReader:
    """P(male) of a reconstruction network of the model repository on the aligned face; NaN where no face
    is found."""

    names = ("gender",)

    def __init__(self, version: int, size: int) -> None:
        from surrogate.extract import OnnxEstimator
        from surrogate.runtime import default_repository

        self.estimator = OnnxEstimator(default_repository(), version)
        self.size = size

    def read(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        from surrogate.face_align import align_face

        out = np.full(len(faces), np.nan)
        crops, found = [], []
        for i, face in enumerate(faces):
            aligned = align_face(upscale(face, self.size), self.estimator.image_size, channels=self.estimator.channels)
            if aligned is not None:
                crops.append(aligned.crop)
                found.append(i)
        if crops:
            values = self.estimator.predict(crops)
            out[found] = values[:, self.estimator.schema.index("gender")]
        return {"gender": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yaw", type=float, default=35.0)
    parser.add_argument("--pitch", type=float, default=20.0)
    parser.add_argument("--roll", type=float, default=20.0)
    parser.add_argument("--pool", default=None,
                        help="draw the rows from a canonical attribute CSV instead (rows --rows of it, e.g. the "
                        "held-out portrait-corpus readings the photoreal benchmark draws from: AUs co-occur as "
                        "they do on faces, not independently)")
    parser.add_argument("--rows", default="9232:9832", help="rows start:stop of --pool")
    parser.add_argument("--reader", choices=("dlib", "mediapipe", "recon"), default="dlib")
    parser.add_argument("--recon-version", type=int, default=3, help="recon version read by --reader recon")
    parser.add_argument("--mediapipe-model", type=Path, default=DEFAULT_TASK)
    parser.add_argument("--face-models", nargs="+", default=["parametric", "ict"])
    parser.add_argument("--no-emotion", action="store_true", help="skip the fer joy classifier")
    parser.add_argument("--reader-size", type=int, default=256,
                        help="upscale faces to this many pixels before reading (0: as rendered)")
    args = parser.parse_args()

    from surrogate.schema import DEFAULT_SCHEMA
    from surrogate.synthesis_3d import render_surrogates_3d

    if args.pool:
        values = draw_pool(args.pool, args.rows, args.n, args.seed)
        rows = {name: values[:, k] for k, name in enumerate(DEFAULT_SCHEMA.names)}
    else:
        rows = draw_rows(args.n, np.random.default_rng(args.seed), args.yaw, args.pitch, args.roll)
        values = np.stack([rows[name] for name in DEFAULT_SCHEMA.names], axis=1).astype(np.float32)
    seeds = [args.seed * 100_000 + i for i in range(args.n)]
    reader: DlibReader | MediaPipeReader | ReconReader
    if args.reader == "dlib":
        reader = DlibReader(args.reader_size)
    elif args.reader == "recon":
        reader = ReconReader(args.recon_version, args.reader_size)
    else:
        reader = MediaPipeReader(args.mediapipe_model, args.reader_size)
    emotion = None
    if not args.no_emotion:
        from audit.emotion import JOY, FerEmotion

        emotion = FerEmotion()
    drawn = (f"rows {args.rows} of {args.pool}" if args.pool else
             f"yaw/pitch/roll uniform in +-{args.yaw:g}/{args.pitch:g}/{args.roll:g} deg; AUs 0 (p 0.4) or "
             "uniform 0..5")
    print(f"{args.n} faces at {args.size} px, reader {args.reader} (at {args.reader_size or args.size} px); {drawn}")
    gender_auc = "gender" in reader.names
    header = ["model", "found", *reader.names] + (["gender AUC"] if gender_auc else []) + (["joy"] if emotion else [])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model in args.face_models:
        start = time.perf_counter()
        faces = render_surrogates_3d(DEFAULT_SCHEMA, values, seeds, size=args.size, model=model)
        read = reader.read(faces)
        found = np.isfinite(read[reader.names[0]])
        cells = [model, f"{found.mean():.1%}"]
        cells += [f"{pearson(rows[name][found], read[name][found]):.2f}" for name in reader.names]
        if gender_auc:
            cells.append(f"{auc(read['gender'][found], rows['gender'][found] > 0.5):.3f}")
        if emotion:
            joy = emotion.probabilities(list(faces))[:, JOY]
            cells.append(f"{pearson(rows['AU12'], joy):.2f}")
        print("| " + " | ".join(cells) + f" |  ({time.perf_counter() - start:.0f} s)", flush=True)
        if args.reader == "mediapipe":  # its readings share the request's units: r hides a scale error
            slopes = [np.polyfit(rows[name][found], read[name][found], 1)[0] for name in reader.names]
            print(f"| {model}: slope of read on requested | | " + " | ".join(f"{x:.2f}" for x in slopes)
                  + " |" + " |" * (len(header) - 2 - len(slopes)), flush=True)


if __name__ == "__main__":
    main()
