"""Do other directions in w move the person less per unit of effect? Causal gradients vs the shipped directions.

1. Causal gradients: for ``--pairs`` fresh seeds, w0 + d and w0 - d are rendered (d ~ N(0, sigma^2 I), one draw
   per seed) and read by MediaPipe; half the difference of the readings is regressed on d (ridge, the penalty
   picked on every 7th pair held out), giving each attribute's gradient g in w: what a step does to the
   reading, not what correlates with it in natural portraits (the shipped read-out).
2. Per attribute of ``PLAN``, ``--seeds`` other seeds are edited along the shipped direction and along g, each
   scaled by the gradient model to the same effect, rendered, framed and read; printed: the w-norm of the
   step, how far MediaPipe's reading moved, dlib's descriptor distance to the unedited render (per unit of
   effect) and the leaks into the other readings.

    PYTHONPATH=. .venv/bin/python benchmarks/photoreal_causal_directions.py --pairs 700 --sigma 0.25 --seeds 12
"""

from __future__ import annotations

import argparse

import numpy as np

NAMES = ("yaw", "pitch", "AU04", "AU05", "AU07", "AU12", "AU23")
PLAN = {"yaw": 15.0, "AU12": 2.0, "AU04": 1.5}  # effect asked of each edit (degrees, AU intensity)
PAIR_SEED_BASE = 9_300_000_000  # fresh seeds, apart from the benchmarks' and the corpora's
EDIT_SEED_BASE = 9_400_000_000


def gradients(backend, pairs: int, sigma: float) -> dict[str, np.ndarray]:
    from surrogate.landmarks import readings_array
    from surrogate.portraits import z_for_seeds

    w0 = backend.base_latents(z_for_seeds([PAIR_SEED_BASE + i for i in range(pairs)]))
    delta = (sigma * np.random.default_rng(5).standard_normal(w0.shape)).astype(np.float32)
    _, read = backend.rolled(np.concatenate([w0 + delta, w0 - delta]), np.zeros(2 * pairs, np.float32))
    read = readings_array(read, NAMES).astype(np.float64)
    ok = np.isfinite(read[:pairs]).all(1) & np.isfinite(read[pairs:]).all(1)
    x, y = 2 * delta[ok].astype(np.float64), (read[:pairs] - read[pairs:])[ok]
    test = np.arange(len(x)) % 7 == 0
    def fit(rows: np.ndarray, j: int, penalty: float) -> np.ndarray:
        a = x[rows]
        return np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ y[rows, j])

    out = {}
    for j, name in enumerate(NAMES):
        scores = {p: np.corrcoef(x[test] @ fit(~test, j, p), y[test, j])[0, 1] for p in (1, 10, 30, 100, 300, 1000)}
        penalty = max(scores, key=scores.get)
        out[name] = fit(np.ones(len(x), bool), j, penalty)
        print(f"{name:6s} gradient: held-out r {scores[penalty]:.3f} (ridge {penalty}), "
              f"|g| {np.linalg.norm(out[name]):.2f} per unit of w ({ok.sum()} pairs)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=700)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--seeds", type=int, default=12)
    args = parser.parse_args()

    from surrogate.face_identity import DlibIdentity
    from surrogate.landmarks import readings_array
    from surrogate.photoreal import PhotorealBackend
    from surrogate.portraits import z_for_seeds

    backend = PhotorealBackend(refine=0)
    causal = gradients(backend, args.pairs, args.sigma)
    n = args.seeds
    w0 = backend.base_latents(z_for_seeds([EDIT_SEED_BASE + i for i in range(n)])).astype(np.float64)
    sign = np.where(np.arange(n) % 2, -1.0, 1.0)  # yaw both ways
    steps, tags = [w0], []
    for name, effect in PLAN.items():
        g = causal[name]
        shipped = backend.directions.vectors[backend.directions.names.index(name)].astype(np.float64)
        for kind, direction in (("shipped", shipped), ("causal", g)):
            unit = direction / np.linalg.norm(direction)
            size = effect / (g @ unit)  # the gradient model's step for the same effect
            steps.append(w0 + (sign[:, None] if name == "yaw" else 1.0) * size * unit)
            tags.append((name, kind))
    w = np.concatenate(steps).astype(np.float32)
    portraits, found = backend.rolled(w, np.zeros(len(w), np.float32))
    read = readings_array(found, NAMES).astype(np.float64)
    descriptors, _ = DlibIdentity().describe([backend.frame(p, 0.0, r) for p, r in zip(portraits, found, strict=True)])
    for t, (name, kind) in enumerate(tags, start=1):
        rows = slice(t * n, (t + 1) * n)
        j = NAMES.index(name)
        moved = np.nanmean((read[rows, j] - read[:n, j]) * (sign if name == "yaw" else 1.0))
        distance = np.linalg.norm(descriptors[rows] - descriptors[:n], axis=1)
        leaks = " ".join(f"{k} {np.nanmean(np.abs(read[rows, i] - read[:n, i])):.2f}" for i, k in enumerate(NAMES)
                         if k != name and k in ("yaw", "pitch", "AU04", "AU12"))
        print(f"{name:5s} {kind:8s} step |dw| {np.linalg.norm(w[rows] - w[:n], axis=1).mean():5.2f}  reading moved "
              f"{moved:6.2f}  dlib median {np.median(distance):.3f} ({np.median(distance) / max(abs(moved), 1e-6):.3f} "
              f"per unit moved, < 0.5 in {100 * np.mean(distance < 0.5):.0f}%)  other readings moved: {leaks}")


if __name__ == "__main__":
    main()
