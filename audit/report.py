"""The audit's outputs: audit.json (every number), audit.md (tables a reviewer reads) and figures."""

from __future__ import annotations

import io
import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.imageio import atomic_write_bytes, atomic_write_text, image_grid, save_png

REPORT_JSON = "audit.json"
REPORT_MD = "audit.md"


def _figure_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def memorisation_figure(distances: dict[str, np.ndarray], threshold: float, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.2))
    finite = np.concatenate([d for d in distances.values() if len(d)])
    bins = np.linspace(0, float(finite.max()) * 1.05 if len(finite) else 1.0, 40)
    for name, values in distances.items():
        axis.hist(values, bins=bins, alpha=0.5, density=True, label=name)
    axis.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.2f}")
    axis.set_xlabel("distance to nearest training image (grey pixels)")
    axis.set_ylabel("density")
    axis.legend(fontsize=7)
    atomic_write_bytes(path, _figure_bytes(figure))
    plt.close(figure)


def reidentification_figure(identity: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    sets = list(identity)
    figure, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 3.4), squeeze=False)
    for axis, set_name in zip(axes[0], sets, strict=True):
        probes = identity[set_name]["probes"]
        names = list(probes)
        rank1 = [probes[n]["ranks"][0] for n in names]
        x = np.arange(len(names))
        axis.bar(x, [r["accuracy"] for r in rank1], yerr=[r["accuracy_se"] for r in rank1], color="tab:blue")
        nulls = [(i, probes[n]["null"]["null_rate"]) for i, n in enumerate(names) if probes[n].get("null")]
        if nulls:
            axis.scatter([i for i, _ in nulls], [v for _, v in nulls], marker="_", s=400, color="tab:red",
                         zorder=3, label="attribute-matched null")
        chance = rank1[0]["chance"]
        axis.axhline(chance, color="k", linestyle="--", label=f"chance {chance:.3f}")
        axis.axhspan(chance - rank1[0]["chance_se"], chance + rank1[0]["chance_se"], color="grey", alpha=0.3)
        axis.set_xticks(x, [textwrap.fill(n, 16) for n in names], fontsize=7)  # long names would overlap
        axis.set_ylim(0, 1.05)
        axis.set_title(f"{set_name}: rank-1 re-identification (gallery {identity[set_name]['gallery']})", fontsize=9)
        axis.legend(fontsize=7)
    atomic_write_bytes(path, _figure_bytes(figure))
    plt.close(figure)


def examples_figure(examples: dict[str, Sequence[np.ndarray]], path: Path) -> None:
    """One row per version (raw, degraded, surrogates), one column per face, all grey at one size."""
    from PIL import Image

    from surrogate.face_align import to_gray

    size = 64
    cells = []
    columns = max((len(v) for v in examples.values()), default=0)
    for images in examples.values():
        row = [np.asarray(Image.fromarray(to_gray(np.asarray(im))).resize((size, size))) for im in images]
        row += [np.full((size, size), 255, np.uint8)] * (columns - len(row))
        cells += row
    if cells:
        save_png(path, image_grid(cells, columns))


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _p(value: float) -> str:
    """A p-value: 3 significant digits, and "< 1e-12" instead of a misleading 0."""
    return "< 1e-12" if value < 1e-12 else f"{value:.3g}"


def _alpha(identity: dict[str, Any]) -> str:
    values = {block.get("alpha") for block in identity.values()} - {None}
    return ", ".join(f"{a:g}" for a in sorted(values)) or "n/a"


def _shown(path: Any) -> str:
    """A path as the report shows it: relative to the working directory when inside it (the config resolves
    paths to absolute ones), so a report made in a checkout reads the same on every machine."""
    text = str(path)
    try:
        return str(Path(text).relative_to(Path.cwd())) if Path(text).is_absolute() else text
    except ValueError:
        return text


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Privacy and fidelity audit", ""]
    models = result["models"]
    lines += [
        f"Model repository: `{_shown(models['repository'])}`; estimator: {_shown(models['estimator'])}; "
        f"methods: {', '.join(models['methods']) or 'none'}"
        + "".join(f"; {name} version {v}" for name, v in models.get("versions", {}).items())
        + f"; run time {result.get('elapsed_s', 'n/a')} s.",
        "",
    ]
    for method, reason in models["skipped_methods"].items():
        lines.append(f"- method **{method}** skipped: {reason}")
    ao = result["attributes_only"]
    lines += [
        "",
        "## 1. Attributes-only guarantee",
        "",
        f"Signature check of the synthesis entry points: {ao['signature_findings'] or 'no findings'}.",
        "In-process trace of the service's `/anonymize` (what reaches synthesis must equal the reconstructed "
        "attribute row and the seed's noise):",
        "",
    ]
    for method, trace in ao["anonymize_traces"].items():
        lines.append(
            f"- {method}: HTTP {trace['status']}, {trace['render_calls']} render call(s), "
            f"{trace['generator_calls']} generator call(s), findings: {trace['findings'] or 'none'}"
        )
    lines += [
        "",
        f"**{'PASSED' if ao['passed'] else 'FAILED'}**",
        "",
        "## 2. Identity leakage (dlib 128-d descriptors)",
        "",
        "Gallery: one raw face per identity; `same person` = share of probe/source pairs below dlib's 0.6 "
        "distance. `p vs chance`: exact one-sided binomial test of the rank-1 hits against chance "
        "(1 / gallery). Attribute-matched null: for each source face, the K faces nearest to it in normalised "
        "attribute space (never itself) are strangers; `null rate` = share of the strangers' probes (made from "
        "their own attributes, ranked in the gallery without their own photo) that rank the source first. "
        "`p vs null`: exact stratified permutation test of the real probes' hits against the strangers' "
        "(docs/audit.md). Verdict at alpha = "
        f"{_alpha(result['identity'])}: `within chance` (p vs chance >= alpha); otherwise `identity leak` when "
        "p vs null < alpha too, else `attribute-level match`.",
        "",
    ]
    for set_name, block in result["identity"].items():
        ranks = [r["rank"] for r in next(iter(block["probes"].values()))["ranks"]]
        null = block.get("null") or {}
        k = null.get("neighbours", 0)
        header = (
            "| probe | "
            + " | ".join(f"rank-{r} hits / n" for r in ranks)
            + f" | chance (rank-{ranks[0]}) | null rate (K={k} strangers) | p vs chance | p vs null | verdict "
            "| dlib detected | same person |"
        )
        if k:
            strangers = (
                f"Attribute-matched strangers: K = {k} per face in ({', '.join(null['attributes'])}); mean "
                f"normalised distance to them {_fmt(null['mean_distance_to_strangers'], 3)} (median over all pairs "
                f"of faces {_fmt(null['median_distance_all_pairs'], 3)})."
            )
        else:
            strangers = f"No attribute-matched null: {null.get('skipped', 'not computed')}."
        lines += [
            f"### {set_name} faces (gallery {block['gallery']}, "
            f"dlib detected {_fmt(block['gallery_detected_fraction'], 2)})",
            "",
            f"Pairs of different people in the gallery that dlib calls the same person: "
            f"{_fmt(block['different_people_same_person_fraction'], 2)} (the baseline for the last column). "
            + strangers,
            "",
            header,
            "|" + "---|" * (len(ranks) + 8),
        ]
        for probe, row in block["probes"].items():
            cells = [f"{r['hits']} / {r['probes']} ({r['accuracy']:.3f})" for r in row["ranks"]]
            first = row["ranks"][0]
            comparison = row.get("null")
            null_cell = (
                f"{comparison['null_rate']:.3f} ({comparison['null_hits']} / {comparison['null_trials']})"
                if comparison
                else "n/a"
            )
            p_null = _p(row["p_vs_null"]) if row.get("p_vs_null") is not None else "n/a"
            lines.append(
                f"| {probe} | " + " | ".join(cells) + f" | {first['chance']:.3f} | {null_cell} | "
                f"{_p(row.get('p_vs_chance', first['p_value']))} | {p_null} | {row['verdict']} | "
                f"{_fmt(row['detected_fraction'], 2)} | {_fmt(row['same_person_fraction'], 2)} |"
            )
        lines.append("")
    lines += ["![re-identification](reidentification.png)", ""]
    mem = result["memorisation"]
    lines += [
        "## 3. Memorisation",
        "",
        f"Training set `{_shown(mem['training_dataset'])}` ({mem['training_images']} images). "
        f"A sample is flagged when its nearest training image is closer than {mem['threshold']:.3f}, the "
        f"{mem['threshold_percentile']}th percentile of the training images' own leave-one-out nearest-neighbour "
        "distances.",
        "",
        "| samples | n | flagged | flagged fraction | median NN distance / training median |",
        "|---|---|---|---|---|",
    ]
    for name, row in {
        "control: degraded training copies": mem["control: degraded training copies"],
        **{f"generated {m}": r for m, r in mem["methods"].items()},
    }.items():
        lines.append(
            f"| {name} | {row['samples']} | {row['flagged']} | {row['flagged_fraction']:.3f} | "
            f"{_fmt(row['ratio_median'])} |"
        )
    if mem.get("blur_matched"):
        fraction = next(iter(mem["blur_matched"].values()))["face_fraction"]
        lines += [
            "",
            "Blur-matched check: the training images blurred to each generator's sharpness (sigma in pixels), "
            f"the inner face compared (the central {fraction:.0%} of the frame's width and height) and every "
            "image standardised (contrast and "
            "brightness taken out); the threshold is taken again on that set. Blurry or low-contrast samples "
            "that copy no one are not flagged here; copies blurred as much (control) still are.",
            "",
            "| samples | blur sigma | threshold | flagged | flagged fraction | median NN / training median "
            "| control flagged |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, row in mem["blur_matched"].items():
            lines.append(
                f"| generated {method} | {row['sigma']:.2f} | {row['threshold']:.3f} | {row['flagged']} / "
                f"{row['samples']} | {row['flagged_fraction']:.3f} | {_fmt(row['ratio_median'])} | "
                f"{row['control_flagged_fraction']:.2f} |"
            )
    lines += ["", "![memorisation](memorisation.png)", "", "## 4. Fidelity", ""]
    fid = result["fidelity"]
    recovery = fid["recovery"]
    if "skipped" in recovery:
        lines.append(f"Attribute recovery skipped: {recovery['skipped']}.")
    else:
        names = list(next(iter(recovery.values())))
        lines += [
            f"Attribute recovery by the estimator ({_shown(fid['estimator'])}): MAE (natural units) / Pearson r "
            "against the attributes each image was made with.",
            "",
            "| images | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for version, table in recovery.items():
            lines.append(
                f"| {version} | "
                + " | ".join(f"{table[n]['mae']:.2f} / {_fmt(table[n]['r'], 2)}" for n in names)
                + " |"
            )
    emotion = fid.get("emotion")
    if emotion:
        human = emotion["paper_human_accuracy"]
        lines += [
            "",
            "Emotion-label transfer: the `fer` classifier's top emotion on the source vs on each version "
            "(agreement of the binary joy / anger judgement, Cohen's kappa, and how often each side said yes). "
            f"Paper, human workers (Table 1): joy raw {human['joy']['raw']}%, GAN {human['joy']['gan']}%, 3-D "
            f"{human['joy']['3d']}%; anger raw {human['anger']['raw']}%, GAN {human['anger']['gan']}%, "
            f"3-D {human['anger']['3d']}%.",
            "",
        ]
        for set_name, block in emotion["sets"].items():
            lines += [
                f"### {set_name} faces ({block['faces']})",
                "",
                "| version | joy agreement | joy kappa | joy rate src/ver "
                "| anger agreement | anger kappa | anger rate src/ver |",
                "|---|---|---|---|---|---|---|",
            ]
            for version, row in block["versions"].items():
                j, a = row["joy"], row["anger"]
                lines.append(
                    f"| {version} | {_fmt(j['agreement'])} | {_fmt(j['kappa'], 2)} | "
                    f"{_fmt(j['source_rate'], 2)}/{_fmt(j['surrogate_rate'], 2)} | "
                    f"{_fmt(a['agreement'])} | {_fmt(a['kappa'], 2)} | "
                    f"{_fmt(a['source_rate'], 2)}/{_fmt(a['surrogate_rate'], 2)} |"
                )
            lines.append("")
    lines += ["![examples](examples.png)", "", "Rows: raw probe, degraded copy, then each method's surrogate.", ""]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_report(result: dict[str, Any], out: Path, examples: dict[str, Sequence[np.ndarray]]) -> None:
    reidentification_figure(result["identity"], out / "reidentification.png")
    examples_figure(examples, out / "examples.png")
    atomic_write_text(out / REPORT_JSON, json.dumps(_jsonable(result), indent=2))
    atomic_write_text(out / REPORT_MD, markdown(result))
