"""Attribute fidelity and diversity of a generator (checkpoint or ONNX); ``surrogate evaluate gan`` runs it.

Fidelity is measured by an estimator that is NOT the GAN's own auxiliary predictor (which the generator
was trained to please): the reconstruction network's estimator (contract 5) or, when none exists, a
ridge regressor fitted on the real training images. Per attribute: Pearson r between the requested
values (held-out attribute vectors) and the estimated ones; the same estimator on the real held-out
images gives the ceiling the GAN can be compared with.

Diversity: the mean pairwise L1 distance between samples sharing y but differing in z, divided by the
same measure on groups of real training images with the nearest attributes. Mode collapse shows as a
small ratio. The pixel ratio counts every difference (lighting, hair, background); ``--identity-diversity``
adds the same ratio on dlib's face descriptors (the audit's identity model), which asks whether a new z
gives a different-looking person, the variety crowd workers see.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from surrogate.face_identity import DLIB_SAME_PERSON_DISTANCE
from surrogate.imageio import atomic_write_bytes, atomic_write_text, image_grid, save_png
from surrogate.noise import z_batch
from surrogate.runtime import GAN_MODEL, OnnxRuntimeBackend, require, run_generator, to_hwc
from surrogate.schema import AttributeSchema
from surrogate.stats import auc, pearson

# The issue's targets: r >= 0.8 for these, >= 0.6 for every other attribute; diversity ratio >= 0.5.
STRICT_TARGETS = {"AU12": 0.8, "AU06": 0.8, "yaw": 0.8}
DEFAULT_TARGET_R = 0.6
TARGET_DIVERSITY = 0.5
EVAL_SEED_BASE = 2_000_000


class AttributeEstimator(Protocol):
    """Anything with a schema and ``predict(uint8 (N,H,W)[,3]) -> (N, A) natural units``."""

    schema: AttributeSchema

    def predict(self, images: np.ndarray) -> np.ndarray: ...


class FaceDescriber(Protocol):
    """Anything with ``describe(images) -> ((N, D) descriptors, (N,) detected)``, e.g.
    ``surrogate.face_identity.DlibIdentity``."""

    def describe(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


class ImageSource(Protocol):
    schema: AttributeSchema
    z_dim: int

    def generate(self, values: np.ndarray, z: np.ndarray) -> np.ndarray: ...


class CheckpointSource:
    """Generates from a training checkpoint (torch)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from training.gan.checkpoint import load_generator

        self.generator, self.schema, self.config = load_generator(path, device)
        self.z_dim = int(self.config["model"]["z_dim"])
        self.device = device

    def generate(self, values: np.ndarray, z: np.ndarray) -> np.ndarray:
        from training.gan.sampling import generate_uint8

        y = np.clip(self.schema.normalise(self.schema.clip(values)), 0.0, 1.0)
        return generate_uint8(self.generator, z, y, device=self.device)


class OnnxSource:
    """Generates from an exported model repository (contract 6: ``gan_generator``) through the runtime."""

    def __init__(self, repository: str | Path, name: str = GAN_MODEL) -> None:
        self.backend = OnnxRuntimeBackend(repository, gan_model=name, recon_model=None)
        info = require(self.backend.gan, "generator")
        self.schema = info.schema
        self.z_dim = info.z_dim

    def generate(self, values: np.ndarray, z: np.ndarray) -> np.ndarray:
        return run_generator(self.backend, values.astype(np.float32), z.astype(np.float32), batch_size=128)


def _as_features(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images of any size -> flattened grayscale ``size`` x ``size`` features in [0, 1]."""
    feats = []
    for image in images:
        pil = Image.fromarray(image).convert("L")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BOX)
        feats.append(np.asarray(pil, dtype=np.float32).ravel() / 255.0)
    return np.stack(feats)


class RidgePixelEstimator:
    """A separately trained attribute regressor: closed-form ridge regression on 24x24 gray pixels.

    Fitted on real training images only; independent of the GAN. Weak but honest, so its ceiling on
    real held-out images is always reported next to the GAN's score."""

    def __init__(self, schema: AttributeSchema, size: int = 24, ridge: float = 10.0) -> None:
        self.schema, self.size, self.ridge = schema, size, ridge
        self.mean: np.ndarray | None = None

    def fit(self, images: np.ndarray, values: np.ndarray) -> RidgePixelEstimator:
        x = _as_features(images, self.size)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-3
        xs = np.hstack([(x - self.mean) / self.std, np.ones((len(x), 1), np.float32)])
        y = self.schema.normalise(values)
        gram = xs.T @ xs + self.ridge * np.eye(xs.shape[1], dtype=np.float32)
        self.weights = np.linalg.solve(gram, xs.T @ y)
        return self

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise RuntimeError("RidgePixelEstimator.predict before fit")
        x = _as_features(images, self.size)
        xs = np.hstack([(x - self.mean) / self.std, np.ones((len(x), 1), np.float32)])
        return self.schema.denormalise(np.clip(xs @ self.weights, 0.0, 1.0))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two descriptor sets (FID's formula, on any features)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)  # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2)
    return float(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def realism_distance(generated: np.ndarray, real_a: np.ndarray, real_b: np.ndarray,
                     describer: FaceDescriber) -> dict[str, Any]:
    """Frechet distance on face descriptors: generated vs real, and real vs other real (the floor).

    Images are (N, H, W)[, 3] uint8; faces the describer cannot find are left out and counted.
    """
    def describe(images: np.ndarray) -> np.ndarray:
        descriptors, found = describer.describe(list(images))
        return np.asarray(descriptors)[np.asarray(found, bool)]

    fake, first, second = describe(generated), describe(real_a), describe(real_b)
    return {
        "generated_vs_real": frechet_distance(fake, first),
        "floor_real_vs_real": frechet_distance(second, first),
        "described": {"generated": len(fake), "real": len(first), "real_second": len(second)},
        "of": {"generated": len(generated), "real": len(real_a), "real_second": len(real_b)},
    }


def mean_pairwise_l1(groups: np.ndarray) -> float:
    """groups: (G, K, ...) uint8; mean L1 distance ([0, 1] scale) over all pairs within each group."""
    flat = groups.reshape(groups.shape[0], groups.shape[1], -1).astype(np.float32) / 255.0
    iu = np.triu_indices(flat.shape[1], 1)
    total = 0.0
    for group in flat:
        d = np.abs(group[:, None, :] - group[None, :, :]).mean(axis=2)
        total += float(d[iu].mean())
    return total / len(flat)


def within_group_distances(descriptors: np.ndarray) -> np.ndarray:
    """descriptors: (G, K, D); the Euclidean distance of every within-group pair, (G * K(K-1)/2,)."""
    iu = np.triu_indices(descriptors.shape[1], 1)
    d = np.linalg.norm(descriptors[:, :, None, :] - descriptors[:, None, :, :], axis=3)
    return d[:, iu[0], iu[1]].reshape(-1)


IDENTITY_NOISE_STD = 2.0  # grey levels: a change nobody would call another person (sensor or JPEG noise)


def identity_diversity(
    samples: np.ndarray, real_groups: np.ndarray, describer: FaceDescriber, seed: int = 0
) -> dict[str, Any]:
    """Face-descriptor diversity of the generated groups (same y, different z) against the real groups
    (nearest attributes). samples / real_groups: (G, K, H, W[, C]) uint8.

    Why a noise floor: on dim, blurry 64 px faces dlib's descriptor moves 0.1-0.23 when Gaussian noise of
    2 grey levels is added, about as far as a nearly collapsed generator's samples are apart (docs/gan.md,
    "Evaluation"). So each set's floor (each face against a copy with that noise) is measured too, and
    the headline ratio compares the distance beyond the floor: (generated - floor) / (real - floor).
    The raw ratio and the share of pairs past dlib's same-person threshold are kept beside it."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"same_person_distance": DLIB_SAME_PERSON_DISTANCE, "noise_std": IDENTITY_NOISE_STD}
    for name, groups in (("generated", samples), ("real", real_groups)):
        g, k = groups.shape[:2]
        faces = groups.reshape(g * k, *groups.shape[2:])
        noisy = np.clip(np.round(faces + rng.normal(0.0, IDENTITY_NOISE_STD, faces.shape)), 0, 255).astype(np.uint8)
        both, detected = describer.describe([*faces, *noisy])  # one pass: the faces, then their noisy copies
        both = np.asarray(both, np.float64)
        descriptors, noisy_descriptors, detected = both[: g * k], both[g * k :], detected[: g * k]
        distances = within_group_distances(descriptors.reshape(g, k, -1))
        out[f"{name}_mean_distance"] = float(distances.mean())
        out[f"{name}_noise_floor"] = float(np.linalg.norm(descriptors - noisy_descriptors, axis=1).mean())
        out[f"{name}_different_person_fraction"] = float((distances >= DLIB_SAME_PERSON_DISTANCE).mean())
        out[f"{name}_detected_fraction"] = float(np.mean(detected))
    real = out["real_mean_distance"]
    out["raw_ratio"] = out["generated_mean_distance"] / real if real > 0 else float("nan")
    beyond_real = real - out["real_noise_floor"]
    beyond_generated = max(0.0, out["generated_mean_distance"] - out["generated_noise_floor"])
    out["ratio"] = beyond_generated / beyond_real if beyond_real > 0 else float("nan")
    return out


class CachedDescriber:
    """A describer that remembers each image's descriptor. The real groups (and their seeded noisy copies)
    are the same for every snapshot of a run folder, so dlib describes them once, not once per snapshot."""

    def __init__(self, describer: FaceDescriber) -> None:
        self.describer = describer
        self.cache: dict[bytes, tuple[np.ndarray, bool]] = {}

    def describe(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        keys = [
            hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).digest() for image in images
        ]
        missing = list({key: image for key, image in zip(keys, images, strict=True) if key not in self.cache}.items())
        if missing:
            descriptors, detected = self.describer.describe([image for _, image in missing])
            self.cache.update({key: (descriptors[i], bool(detected[i])) for i, (key, _) in enumerate(missing)})
        return np.stack([self.cache[key][0] for key in keys]), np.array([self.cache[key][1] for key in keys])


def z_variance_shares(group_estimates: np.ndarray, groups: int, estimates: np.ndarray) -> np.ndarray:
    """Per attribute: the variance of the estimator's reading within groups that share y (only z differs)
    over its variance across all the generated faces. group_estimates: (groups * K, A) in group order;
    estimates: (N, A) on faces with their own y. Near 0: the reading follows y alone. A large share says
    z moves the attribute (the y/z trade of docs/gan.md: a low r with a small share is a weak response
    to y instead). The estimator's own noise on one image counts in both, so the share has a floor."""
    within = group_estimates.reshape(groups, -1, group_estimates.shape[-1]).var(axis=1, ddof=1).mean(axis=0)
    total = estimates.var(axis=0, ddof=1)
    return np.where(total > 0, within / np.where(total > 0, total, 1.0), np.nan)


def nearest_attribute_groups(values_norm: np.ndarray, anchors: np.ndarray, k: int) -> np.ndarray:
    """For each anchor row, the indices of the k rows with the nearest normalised attributes (itself too)."""
    d = ((values_norm[anchors][:, None, :] - values_norm[None, :, :]) ** 2).sum(axis=2)
    return np.argsort(d, axis=1)[:, :k]


def teacher_r_on_real(
    checkpoint: Path, images: np.ndarray, values: np.ndarray, schema: AttributeSchema, device: str = "cpu"
) -> dict[str, float] | None:
    """Pearson r of the discriminator's auxiliary predictor (the generator's only teacher for y) on real
    held-out images, read the way training reads them (``loss.label_blur``); None for a checkpoint without
    a discriminator (snapshots, exports).

    The generator is trained to please this predictor, so an attribute it reads poorly on real faces
    cannot be learned however long the run (docs/gan.md, finding 8)."""
    import torch

    from training.gan.checkpoint import load_checkpoint
    from training.gan.config import config_from_dict
    from training.gan.networks import build_networks, to_began

    payload = load_checkpoint(checkpoint, device)
    if "discriminator" not in payload or len(images) < 3:
        return None
    config = config_from_dict(payload["config"])
    _, discriminator = build_networks(config.model, len(schema))
    discriminator.load_state_dict(payload["discriminator"])
    discriminator.to(device).eval()
    predicted = []
    with torch.no_grad():
        for start in range(0, len(images), 256):
            x = to_began(torch.from_numpy(images[start : start + 256]).to(device))
            predicted.append(discriminator.read_labels(x, config.loss.label_blur).float().cpu().numpy())
    y_hat = np.concatenate(predicted)
    y = np.clip(schema.normalise(values), 0.0, 1.0)
    return {name: pearson(y[:, i], y_hat[:, i]) for i, name in enumerate(schema.names)}


@dataclass
class EvaluationResult:
    report: dict[str, Any]
    samples: np.ndarray
    sweep: np.ndarray
    real_groups: np.ndarray


def evaluate_generator(
    source: ImageSource,
    estimator: AttributeEstimator,
    train_images: np.ndarray,
    train_values: np.ndarray,
    held_values: np.ndarray,
    *,
    held_images: np.ndarray | None = None,
    n_eval: int = 500,
    groups: int = 32,
    per_group: int = 8,
    sweep_steps: int = 7,
    seed: int = 0,
    describer: FaceDescriber | None = None,
    realism_images: tuple[np.ndarray, np.ndarray] | None = None,
) -> EvaluationResult:
    """Fidelity and diversity (and, given a face describer, identity diversity and, given two sets of real
    images, the realism distance). Images are uint8 (N, C, H, W) (the training data layout)."""
    schema = source.schema
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(held_values), size=min(n_eval, len(held_values)), replace=False)
    requested = held_values[pick].astype(np.float32)
    z = z_batch([EVAL_SEED_BASE + i for i in range(len(requested))], source.z_dim)
    generated = source.generate(requested, z)
    estimated = estimator.predict(generated)
    found = getattr(estimator, "found", None)  # estimators that can miss a face say where
    found_rate = float(np.mean(found)) if found is not None and len(found) == len(generated) else None

    common = [n for n in schema.names if n in estimator.schema]
    fidelity: dict[str, Any] = {}
    ceiling_est = estimator.predict(to_hwc(held_images)) if held_images is not None and len(held_images) else None
    for name in common:
        i, j = schema.index(name), estimator.schema.index(name)
        entry = {
            "pearson_r": pearson(requested[:, i], estimated[:, j]),
            "mae": float(np.abs(requested[:, i] - estimated[:, j]).mean()),
            "unit": schema.spec(name).unit,
            "target_r": STRICT_TARGETS.get(name, DEFAULT_TARGET_R),
        }
        if ceiling_est is not None:
            held_pick = held_values if held_images is not None else None
            entry["estimator_r_on_real"] = pearson(held_pick[: len(ceiling_est), i], ceiling_est[:, j])
        if name == "gender":
            finite = np.isfinite(estimated[:, j])
            entry["auc"] = auc(estimated[finite, j], requested[finite, i] > 0.5)
        entry["meets_target"] = bool(not math.isnan(entry["pearson_r"]) and entry["pearson_r"] >= entry["target_r"])
        fidelity[name] = entry

    # Diversity: same y, different z, vs real images with the nearest attributes.
    group_y = requested[:groups] if len(requested) >= groups else requested
    gy = np.repeat(group_y, per_group, axis=0)
    gz = z_batch([EVAL_SEED_BASE + 100_000 + i for i in range(len(gy))], source.z_dim)
    samples = source.generate(gy, gz)
    z_shares = z_variance_shares(estimator.predict(samples), len(group_y), estimated)
    samples = samples.reshape(len(group_y), per_group, *samples.shape[1:])
    fake_div = mean_pairwise_l1(samples)
    train_norm = np.clip(schema.normalise(train_values), 0, 1)
    anchors = rng.choice(len(train_values), size=min(len(group_y), len(train_values)), replace=False)
    neighbours = nearest_attribute_groups(train_norm, anchors, min(per_group, len(train_values)))
    real_groups = to_hwc(train_images)[neighbours]
    real_div = mean_pairwise_l1(real_groups)
    ratio = fake_div / real_div if real_div > 0 else float("nan")

    for name in common:
        fidelity[name]["z_share"] = float(z_shares[estimator.schema.index(name)])

    from training.gan.sampling import sweep_attributes

    sweep_y = schema.denormalise(sweep_attributes(train_norm, sweep_steps))
    sweep = source.generate(sweep_y, np.repeat(z[:1], len(sweep_y), axis=0))

    finite = [e["pearson_r"] for e in fidelity.values() if not math.isnan(e["pearson_r"])]
    report = {
        "n_eval": len(requested),
        "fidelity": fidelity,
        "mean_pearson_r": float(np.mean(finite)) if finite else float("nan"),
        "diversity": {
            "generated_same_y": fake_div,
            "real_similar_y": real_div,
            "ratio": ratio,
            "groups": len(group_y),
            "per_group": per_group,
            "target_ratio": TARGET_DIVERSITY,
            "meets_target": bool(ratio >= TARGET_DIVERSITY),
        },
        "all_targets_met": bool(all(e["meets_target"] for e in fidelity.values()) and ratio >= TARGET_DIVERSITY),
    }
    if found_rate is not None:
        report["face_found_rate"] = found_rate
    if describer is not None:
        report["identity_diversity"] = identity_diversity(samples, real_groups, describer)
        if realism_images is not None:
            real_a, real_b = realism_images
            report["realism"] = realism_distance(generated, to_hwc(real_a), to_hwc(real_b), describer)
    return EvaluationResult(report, samples, sweep, real_groups)


def markdown_summary(report: dict[str, Any], source: str, estimator: str) -> str:
    teacher = any("teacher_r_on_real" in e for e in report["fidelity"].values())
    lines = [
        "# GAN evaluation",
        "",
        f"- generator: `{source}`",
        f"- estimator: `{estimator}`",
        f"- held-out attribute vectors: {report['n_eval']}",
        "",
        "| attribute | Pearson r | target | met | MAE | z's share | estimator r on real |"
        + (" D's auxiliary predictor r on real |" if teacher else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if teacher else ""),
    ]
    for name, e in report["fidelity"].items():
        real = e.get("estimator_r_on_real", float("nan"))
        lines.append(
            f"| {name} | {e['pearson_r']:.3f} | {e['target_r']:.1f} | {'yes' if e['meets_target'] else 'NO'} "
            f"| {e['mae']:.3g} {e['unit']} | {e.get('z_share', float('nan')):.2f} | {real:.3f} |"
            + (f" {e.get('teacher_r_on_real', float('nan')):.3f} |" if teacher else "")
        )
    d = report["diversity"]
    lines += [
        "",
        "z's share: the variance of the estimator's reading among faces that share y (only z differs) over its "
        "variance across all the generated faces; near 0 the reading follows y alone, a large share says z moves "
        "the attribute.",
        "",
        f"Diversity (mean pairwise L1, same y, different z): generated {d['generated_same_y']:.4f}, "
        f"real images of similar attributes {d['real_similar_y']:.4f}, **ratio {d['ratio']:.3f}** "
        f"(target >= {d['target_ratio']}, {'met' if d['meets_target'] else 'NOT met'}).",
        "",
    ]
    if "identity_diversity" in report:
        i = report["identity_diversity"]
        lines += [
            f"Identity diversity (dlib descriptor distance, same y, different z): generated "
            f"{i['generated_mean_distance']:.3f} (noise floor {i['generated_noise_floor']:.3f}), real images of "
            f"similar attributes {i['real_mean_distance']:.3f} (floor {i['real_noise_floor']:.3f}); **ratio beyond "
            f"the floor {i['ratio']:.3f}** (raw {i['raw_ratio']:.3f}); pairs dlib calls different people (distance "
            f">= {i['same_person_distance']}): generated {i['generated_different_person_fraction']:.1%}, real "
            f"{i['real_different_person_fraction']:.1%}. The floor is each face against a copy with Gaussian noise "
            f"of {i['noise_std']:g} grey levels. Not an issue target: it asks whether z changes the "
            "person, where the pixel ratio also counts lighting and hair.",
            "",
        ]
    if "face_found_rate" in report:
        lines += [f"Faces found by the estimator in the samples: **{report['face_found_rate']:.1%}**.", ""]
    if "gender" in report["fidelity"] and "auc" in report["fidelity"]["gender"]:
        lines += [f"Gender AUC (requested > 0.5 vs the estimator's reading): "
                  f"**{report['fidelity']['gender']['auc']:.3f}**.", ""]
    if "realism" in report:
        r = report["realism"]
        lines += [
            f"Realism distance (Frechet distance of dlib descriptors): samples vs held-out real faces "
            f"**{r['generated_vs_real']:.4f}**, real vs other real faces (the floor) {r['floor_real_vs_real']:.4f}; "
            f"described {r['described']['generated']}/{r['of']['generated']} samples, "
            f"{r['described']['real']}/{r['of']['real']} real.",
            "",
        ]
    lines += [
        f"All targets met: **{'yes' if report['all_targets_met'] else 'no'}**",
        "",
        "![samples](samples.png) rows: one attribute vector each, columns: different z",
        "",
        "![sweep](sweep.png) each row sweeps one attribute from low to high",
        "",
        "![real](real_neighbours.png) real training images with similar attributes (diversity reference)",
        "",
    ]
    return "\n".join(lines)


def write_outputs(result: EvaluationResult, out_dir: Path, source: str, estimator: str, steps: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "evaluation.json", json.dumps(result.report, indent=2, allow_nan=True))
    atomic_write_text(out_dir / "evaluation.md", markdown_summary(result.report, source, estimator))
    per_group = result.samples.shape[1]
    save_png(
        out_dir / "samples.png",
        image_grid(list(result.samples.reshape(-1, *result.samples.shape[2:])[: 8 * per_group]), columns=per_group),
    )
    save_png(out_dir / "sweep.png", image_grid(list(result.sweep), columns=steps))
    rg = result.real_groups
    save_png(
        out_dir / "real_neighbours.png",
        image_grid(list(rg.reshape(-1, *rg.shape[2:])[: 8 * rg.shape[1]]), columns=rg.shape[1]),
    )


def snapshot_paths(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the weights-only snapshots in a run folder (or its ``snapshots/``), oldest first."""
    where = folder / "snapshots" if (folder / "snapshots").is_dir() else folder
    found = []
    for path in where.glob("generator-*.pt"):
        try:
            found.append((int(path.stem.split("-", 1)[1]), path))
        except ValueError:
            continue
    return sorted(found)


def target_attainment(report: dict[str, Any]) -> float:
    """Mean over the targets (each attribute's r, and the diversity ratio) of min(1, value / target),
    negative or NaN values counting 0: progress towards every target, none able to buy another's."""
    shares = [e["pearson_r"] / e["target_r"] for e in report["fidelity"].values()]
    shares.append(report["diversity"]["ratio"] / report["diversity"]["target_ratio"])
    return float(np.mean([0.0 if math.isnan(v) else min(1.0, max(0.0, v)) for v in shares]))


RANKING_RULES = {
    "attainment": "highest target attainment (mean over targets of min(1, value / target)), then most targets met",
    "targets": "most targets met, then highest target attainment (mean over targets of min(1, value / target))",
}


def targets_met(report: dict[str, Any]) -> int:
    """How many targets the report meets: each attribute's r, and the diversity ratio."""
    return sum(e["meets_target"] for e in report["fidelity"].values()) + int(report["diversity"]["meets_target"])


def snapshot_ranking_key(report: dict[str, Any], rank_by: str = "attainment") -> tuple[float, float]:
    """Sort key for a run's snapshots under one of ``RANKING_RULES`` (larger is better).

    The default weighs how far each miss is: a snapshot missing one strict target by 0.14 should not beat
    one missing two by 0.04 and 0.01 (docs/gan.md, stage 8). ``targets`` counts met targets first. Neither
    is the mean r: in a collapsing run r keeps rising while diversity falls (docs/gan.md, finding 5), and a
    mean over r alone picks the collapsed snapshot."""
    if rank_by not in RANKING_RULES:
        raise ValueError(f"rank_by must be one of {sorted(RANKING_RULES)}, not {rank_by!r}")
    met, attainment = targets_met(report), target_attainment(report)
    return (attainment, met) if rank_by == "attainment" else (met, attainment)


def snapshot_table(
    rows: list[tuple[int, dict[str, Any]]],
    best_step: int,
    confirmed: list[tuple[int, dict[str, Any]]] | None = None,
    confirm_n: int = 0,
    rank_by: str = "attainment",
) -> str:
    """The run folder's markdown: every snapshot, then (if any) the top ones re-evaluated with more vectors."""
    lines = [
        "# GAN snapshots",
        "",
        "Per-attribute Pearson r (independent estimator) and diversity ratio per training step; best = "
        f"{RANKING_RULES[rank_by]} (`--rank-by {rank_by}`).",
        "",
        *_snapshot_rows(rows, best_step),
    ]
    if confirmed:
        lines += [
            "",
            f"Confirmed with {confirm_n} held-out vectors (the top {len(confirmed)} above, evaluated again; "
            "the best of these is the pick):",
            "",
            *_snapshot_rows(confirmed, best_step),
        ]
    lines += ["", "![snapshots](snapshots.png)", ""]
    return "\n".join(lines)


def _snapshot_rows(rows: list[tuple[int, dict[str, Any]]], best_step: int) -> list[str]:
    names = list(rows[0][1]["fidelity"])
    lines = [
        "| step | " + " | ".join(names) + " | mean r | diversity | targets met | attainment |",
        "|---|" + "---|" * (len(names) + 4),
    ]
    for step, report in rows:
        met = targets_met(report)
        mark = " **best**" if step == best_step else ""
        lines.append(
            f"| {step}{mark} | "
            + " | ".join(f"{report['fidelity'][n]['pearson_r']:.2f}" for n in names)
            + f" | {report['mean_pearson_r']:.3f} | {report['diversity']['ratio']:.2f} | {met} / {len(names) + 1}"
            f" | {target_attainment(report):.3f} |"
        )
    return lines


def snapshot_figure(rows: list[tuple[int, dict[str, Any]]], path: Path) -> bool:
    """Pearson r per attribute and the diversity ratio against the step (False: no matplotlib here)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [step for step, _ in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in rows[0][1]["fidelity"]:
        left.plot(steps, [r["fidelity"][name]["pearson_r"] for _, r in rows], marker=".", label=name)
    left.axhline(DEFAULT_TARGET_R, color="grey", linestyle=":")
    left.axhline(max(STRICT_TARGETS.values()), color="k", linestyle=":")
    left.set(xlabel="step", ylabel="Pearson r (requested vs estimated)", title="attribute fidelity")
    left.legend(fontsize=6, ncol=2)
    right.plot(steps, [r["diversity"]["ratio"] for _, r in rows], marker=".", color="tab:purple")
    right.axhline(TARGET_DIVERSITY, color="k", linestyle=":")
    right.set(xlabel="step", ylabel="generated / real", title="diversity ratio (same y, different z)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return True
