"""A simulated run of the paper's study, end to end, in one call (``surrogate annotate study``).

No private photo ships with the project, so the "private" faces are synthetic renders of known
expression (``surrogate.training_data``). Everything after that is what a team would run on real photos:

1. attributes AND emotion evidence are read off the photos by the shipped ``recon`` network (the
   paper used Emotient for both). The evidence is a FACS prototype score: joy = mean of the AU06 and
   AU12 estimates minus 1.5 (anger: AU04, AU05, AU07, AU23), so 0 is a slight expression;
2. ``faces`` photos are picked evenly over the evidence range, as the paper sampled GENKI-4K by
   evidence bins;
3. publish in the paper's design: one session holding every face as raw photo, GAN and 3-D surrogate,
   plus 3-D gold items (the GAN's gold faces look alike), in a secret order;
4. a simulated crowd (``workers`` per session) answers in MTurk's real results format;
5. import, per-face labels combining the surrogate versions, and the report: Table 1, t-tests,
   Figures 5-8 by evidence, Figures 9-10 (the worst surrogates beside their photos).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surrogate.schema import DEFAULT_SCHEMA

RENDER_RECON_VERSION = 2  # the recon version trained on the parametric renderer's faces

EVIDENCE_AUS: dict[str, tuple[str, ...]] = {"joy": ("AU06", "AU12"), "anger": ("AU04", "AU05", "AU07", "AU23")}
EVIDENCE_MIDPOINT = 1.5  # AU intensity of a slight expression: evidence 0


@dataclass
class StudyResult:
    """Where everything went, and how long each step took (seconds)."""

    out: Path
    timings: dict[str, float] = field(default_factory=dict)
    table: dict[str, dict] = field(default_factory=dict)
    evidence_source: str = ""
    evidence_r: float = float("nan")  # estimated vs true evidence over every candidate photo


def emotion_evidence(values: np.ndarray, emotion: str = "joy") -> np.ndarray:
    """FACS prototype evidence from AU estimates (``DEFAULT_SCHEMA`` order): mean AU intensity - 1.5."""
    columns = [DEFAULT_SCHEMA.index(a) for a in EVIDENCE_AUS[emotion]]
    return np.asarray(values, np.float64)[:, columns].mean(axis=1) - EVIDENCE_MIDPOINT


def pick_evenly(evidence: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` items spread evenly over the range of ``evidence`` (nearest unused to each target)."""
    if n >= len(evidence):
        return list(range(len(evidence)))
    chosen: list[int] = []
    free = np.ones(len(evidence), bool)
    for target in np.linspace(evidence.min(), evidence.max(), n):
        distance = np.where(free, np.abs(evidence - target), np.inf)
        best = int(np.argmin(distance))
        chosen.append(best)
        free[best] = False
    return sorted(chosen)


def run_study(
    out: str | Path,
    *,
    faces: int = 60,
    workers: int = 60,
    seed: int = 0,
    size: int = 128,
    repeats: int = 200,
    spammers: float = 0.05,
    emotion: str = "joy",
    repository: str | Path | None = None,
) -> StudyResult:
    """Run the simulated study into ``out`` (private/ and crowd/); see the module docstring."""
    from annotation.aggregate import face_labels, item_labels, screen_workers, write_csv
    from annotation.batch import load_manifest, publish_batch
    from annotation.mapping import PrivateMapping
    from annotation.platforms import read_labels, write_labels
    from annotation.question import GoldRule, Question
    from annotation.report import ReportOptions, analyse, batch_images, write_report
    from annotation.simulate import CrowdConfig, simulate_crowd, write_mturk_results
    from surrogate.extract import OnnxEstimator
    from surrogate.imageio import load_image
    from surrogate.synthesis import default_repository
    from surrogate.training_data import synthesize_dataset

    out = Path(out)
    private, batch = out / "private", out / "crowd"
    result = StudyResult(out=out)
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.timings[name] = round(now - clock, 2)
        clock = now

    # 1. candidate "private photos" (4x more than needed, to pick from by evidence) and their truth
    photos = private / "photos"
    synthesize_dataset(photos, 4 * faces, seed=seed, size=size, progress=False)
    with (photos / "attributes.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    true_values = np.asarray([[float(r[n]) for n in DEFAULT_SCHEMA.names] for r in rows], np.float32)
    lap("render photos")

    # 2. attributes and evidence read off the photos by the recon network trained on the renderer's faces (v2;
    # v3 learned photoreal portraits, and these "photos" are renders of the parametric face model)
    estimator = OnnxEstimator(repository or default_repository(), RENDER_RECON_VERSION)
    images = [load_image(photos / r["file"]) for r in rows]
    estimated = DEFAULT_SCHEMA.clip(_reorder(estimator.predict(images), estimator.schema.names))
    evidence = emotion_evidence(estimated, emotion)
    aus = "+".join(EVIDENCE_AUS[emotion])
    result.evidence_source = f"recon v{RENDER_RECON_VERSION} (trained on renders), mean of {aus} - {EVIDENCE_MIDPOINT}"
    # validation: the photos' true expression is known, so the estimated evidence can be checked
    result.evidence_r = float(np.corrcoef(evidence, emotion_evidence(true_values, emotion))[0, 1])
    keep = pick_evenly(evidence, faces)
    manifest = private / "faces.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "file", *DEFAULT_SCHEMA.names])
        for i in keep:
            writer.writerow([rows[i]["id"], f"photos/{rows[i]['file']}", *(f"{v:.3f}" for v in estimated[i])])
    with (private / f"{emotion}_evidence.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["private_id", "evidence"])
        writer.writerows([rows[i]["id"], f"{evidence[i]:.3f}"] for i in keep)
    lap("extract attributes + evidence")

    # 3. publish in the paper's design
    yes, no = emotion, f"not {emotion}"
    gold_au = "AU12:5,AU06:4" if emotion == "joy" else "AU04:5,AU07:4,AU23:4"
    summary = publish_batch(
        load_manifest(manifest),
        batch,
        private / "mapping.json",
        question=Question(name="emotion", text=f"Does this face show {emotion}?", choices=(yes, no)),
        methods=("gan", "3d"),
        include_raw=True,
        image_root=private,
        seed=seed,
        size=size,
        url_prefix="https://crowd.example.org/study/images/",
        gold_rules=[GoldRule.parse(f"{yes}={gold_au}"), GoldRule.parse(f"{no}=AU12:0")],
        gold_per_rule=4,
        gold_methods=("3d",),
        session_faces=faces,
        overwrite=True,
        progress=False,
    )
    mapping = PrivateMapping.read(summary.mapping_path)
    lap("publish (render surrogates)")

    # 4. the simulated crowd, in MTurk's results format; truth from the photos' true expression
    true_score = {rows[i]["id"]: float(emotion_evidence(true_values[i : i + 1], emotion)[0]) for i in keep}
    truth = {face: (yes if score >= 0 else no) for face, score in true_score.items()}
    difficulty = {face: math.exp(-abs(score) / 0.7) for face, score in true_score.items()}
    crowd = simulate_crowd(
        mapping, truth, CrowdConfig(n_workers=workers, spammer_fraction=spammers, seed=seed), difficulty
    )
    write_mturk_results(crowd, mapping, private / "mturk_results.csv")
    lap("simulate crowd")

    # 5. labels back, per-face labels, the report
    imported = read_labels(private / "mturk_results.csv", mapping.question, known_tasks=mapping.tokens)
    write_labels(imported.labels, private / "labels.csv")
    labels = imported.labels
    screen = screen_workers(labels, mapping, 0.75)
    kept = item_labels(labels, mapping, exclude_workers=screen.failed)
    write_csv(face_labels(kept, mapping), private / "face_labels.csv")
    scores = {rows[i]["id"]: float(evidence[i]) for i in keep}
    options = ReportOptions(
        repeats=repeats,
        seed=seed,
        covariate=f"{emotion} evidence",
        covariate_values=scores,
        bins=6,
        unambiguous=1.0,
        min_gold_accuracy=0.75,
        title=f"Simulated study: {faces} faces x 3 versions x {workers} workers ({emotion})",
    )
    analysis = analyse(labels, mapping, options=options)
    write_report(analysis, private / "report", title=options.title, images=batch_images(mapping, batch, private))
    result.table = analysis.table
    lap("import + aggregate + report")
    return result


def _reorder(values: np.ndarray, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Estimator output (its schema order) -> ``DEFAULT_SCHEMA`` order."""
    index = [list(names).index(n) for n in DEFAULT_SCHEMA.names]
    return np.asarray(values)[:, index]
