"""How much of dlib's move between two frames of a photoreal seed is the face's geometry, not the person.

The photoreal identity target (same seed, other attributes: dlib distance < 0.5) counts every move of dlib's
descriptor as a change of person. Part of it may be dlib following the pose and expression themselves. The 3-D
face models hold identity fixed, but they are not photographs; this holds it fixed on the photoreal pixels.
Each seed's unedited surrogate (256 px colour) is edited by the method along one attribute (``--edits``,
read-out steps, as ``PhotorealBackend.render_inputs`` sends them). Then the unedited image itself is warped so
that its MediaPipe mesh lands where the edited render's mesh is (a thin-plate spline through every third of
the 478 points, the image border held): the same geometric change, with the same pixels, so the same person.
Per edit it prints MediaPipe's change and dlib's distance from the unedited image, for the generator's render
and for the warp: how far dlib moves with the geometry alone, and how much the generator adds. It also prints
the change of the attribute's measure on dlib's 68 landmarks (``benchmarks/dlib_agreement.py``: a reader that
shares nothing with MediaPipe), in spreads of that measure over the unedited surrogates: an edit that MediaPipe
reads but this does not is tuned to MediaPipe, not made visible.

A warp has no occluded or newly seen parts (a turn's far cheek folds over its contour beyond about 10
degrees, a smile shows no teeth), so its figure is what the geometry costs dlib, up to the warp's own
artefacts, which only add to it. ``--sheet`` shows the first seeds.

    PYTHONPATH=. .venv/bin/python benchmarks/dlib_geometry_warp.py --seeds 48 [--sheet FILE]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.dlib_agreement import DlibGeometry

SEED_BASE = 8_900_000_000  # fresh seeds, apart from the benchmarks' and the corpora's
SPLINE_STRIDE = 3  # every third mesh point controls the spline: as smooth a warp, 9x cheaper to fit
# read-out steps; with the calibration's gains about 9 degrees of turn, 4 of tilt, 1-2 AU units read
EDITS = "yaw:-40,yaw:40,pitch:-10,pitch:10,AU04:2.5,AU07:2,AU12:2,AU23:2.5"


def warp_to(image: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) warped so that its points ``source`` (P, 2 pixels) land on ``target`` (a thin-plate
    spline through every ``SPLINE_STRIDE``-th point; the image border held still)."""
    from skimage.transform import ThinPlateSplineTransform, warp

    h, w = image.shape[:2]
    edge = np.linspace(0, w - 1, 9)
    border = np.array([(e, 0) for e in edge] + [(e, h - 1) for e in edge]
                      + [(0, e) for e in edge[1:-1]] + [(w - 1, e) for e in edge[1:-1]], np.float64)
    src = np.concatenate([np.asarray(source, np.float64)[::SPLINE_STRIDE], border])
    dst = np.concatenate([np.asarray(target, np.float64)[::SPLINE_STRIDE], border])
    # warp() maps each output pixel back to where it comes from: fit the spline from the target points
    if hasattr(ThinPlateSplineTransform, "from_estimate"):
        spline = ThinPlateSplineTransform.from_estimate(dst, src)
    else:  # scikit-image < 0.26
        spline = ThinPlateSplineTransform()
        spline.estimate(dst, src)
    out = warp(image, spline, output_shape=(h, w), order=1, mode="edge", preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def geometry_change(geometry: DlibGeometry, base: list, images: np.ndarray, rows: list[int], name: str) -> str:
    """Median change of ``name``'s dlib landmark measure from ``base`` to ``images`` over ``rows``, in spreads of
    the measure over the unedited frames; "-" where dlib has no measure of ``name``."""
    fitted = [r for r in base if r is not None]
    if not fitted or name not in fitted[0] or len(fitted) < 2:
        return "-"
    spread = float(np.std([r[name] for r in fitted])) or 1.0
    changes = []
    for i in rows:
        edited = geometry.read(images[i])
        if base[i] is not None and edited is not None:
            changes.append((edited[name] - base[i][name]) / spread)
    return f"{np.median(changes):+.2f}" if changes else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=48)
    parser.add_argument("--edits", default=EDITS, help="NAME:STEP,... read-out steps of the method's directions")
    parser.add_argument("--models", default=None, help="a folder of other photoreal model files (a trial's)")
    parser.add_argument("--sheet", default=None, help="an image file: the first seeds, each edit and its warp")
    args = parser.parse_args()

    from surrogate.face_identity import DlibIdentity
    from surrogate.landmarks import readings_array
    from surrogate.photoreal import PhotorealBackend
    from surrogate.portraits import z_for_seeds

    started = time.perf_counter()
    backend = PhotorealBackend(models=args.models)
    identity, reader, names = DlibIdentity(), backend._reader, backend.directions.names
    w0 = backend.base_latents(z_for_seeds([SEED_BASE + i for i in range(args.seeds)]))
    rolls = np.zeros(args.seeds, np.float32)
    unedited = backend.directions.predict(w0)

    def frames(targets: np.ndarray) -> tuple[np.ndarray, list]:
        """The method's framed 256 px renders of the edit of w0 to ``targets``, and MediaPipe's readings."""
        portraits, readings = backend.render_edit(w0, targets, rolls)
        images = np.stack([backend.frame(p, 0.0, r) for p, r in zip(portraits, readings, strict=True)])
        return images, [reader.read(image) for image in images]

    base, base_readings = frames(unedited)
    base_descriptors = identity.describe(list(base))[0]
    geometry = DlibGeometry()
    base_geometry = [geometry.read(image) for image in base]
    print(f"{args.seeds} seeds from {SEED_BASE}: unedited surrogates, 256 px colour, each edited alone and warped")
    print("| edit (read-out step) | MediaPipe change: generator | warp | dlib geometry change: generator | warp | "
          "dlib median: generator | warp | < 0.5: generator | warp |")
    print("|---|---|---|---|---|---|---|---|---|")
    sheet = []
    for item in args.edits.split(","):
        name, step = item.split(":")
        targets = unedited.copy()
        targets[:, names.index(name)] += float(step)
        edited, edited_readings = frames(targets)
        both = [i for i, (a, b) in enumerate(zip(base_readings, edited_readings, strict=True))
                if a is not None and b is not None]
        warped = base.copy()
        for i in both:
            warped[i] = warp_to(base[i], base_readings[i].landmarks[:, :2], edited_readings[i].landmarks[:, :2])
        warped_readings = [reader.read(image) for image in warped]
        row = [f"{name} {float(step):+g}"]
        for readings in (edited_readings, warped_readings):
            change = (readings_array(readings, (name,)) - readings_array(base_readings, (name,)))[both, 0]
            row.append(f"{np.nanmedian(change):+.2f}")
        for images in (edited, warped):
            row.append(geometry_change(geometry, base_geometry, images, both, name))
        distances = [np.linalg.norm(identity.describe(list(images[both]))[0] - base_descriptors[both], axis=1)
                     for images in (edited, warped)]
        row += [f"{np.median(d):.3f}" for d in distances] + [f"{np.mean(d < 0.5):.0%}" for d in distances]
        print("| " + " | ".join(row) + " |", flush=True)
        sheet.append((row[0], edited, warped))
    print(f"({len(both)} of {args.seeds} seeds read in both frames of the last edit; "
          f"{time.perf_counter() - started:.0f} s)")
    if args.sheet:
        from PIL import Image

        from surrogate.sheet import contact_sheet

        cells = []
        for i in range(min(3, args.seeds)):
            cells.append((base[i], ["unedited", f"seed {SEED_BASE + i}"]))
            for label, edited, warped in sheet:
                cells += [(edited[i], [label, "generator"]), (warped[i], [label, "warp"])]
        Image.fromarray(contact_sheet([c[0] for c in cells], [c[1] for c in cells], columns=1 + 2 * len(sheet),
                                      cell=128)).save(args.sheet, quality=88)
        print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
