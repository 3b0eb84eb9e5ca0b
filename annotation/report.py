"""The seed paper's analyses (sections 5.3 and 6) for any set of image versions (raw, gan, 3d).

Definitions, following Shirai & Whitehill:
  * ground truth: per private face, the majority label of its RAW image over all labellers (faces
    whose raw vote is tied are left out and counted), or labels supplied from a file;
  * individual accuracy ("Avg", Table 1): the share of individual labels equal to the ground truth;
  * vote accuracy at >= X% consensus (Table 1): majority-vote accuracy over the faces whose modal
    label has at least X% of the votes (a tied vote counts as the chance of picking the truth);
  * agreement (Figure 5): the share of labellers who gave the modal label;
  * majority vote over n labellers (Figure 6): n labels drawn without replacement per face, ties
    broken at random, averaged over ``repeats`` draws, for n = 3 .. the fewest labels any face has;
  * accuracy binned by an intensity covariate (Figures 7-8): per-face accuracy averaged within
    equal-width bins of an attribute (e.g. AU12) or of an external score (e.g. Emotient evidence);
  * paired t-tests (section 5.3): per face, the paper's 1-sample t-test on the difference in the
    number of labellers who were right, and the same on the share who were right (equal only when
    every face has the same number of labels); per worker, the within-worker difference in accuracy.
Dawid-Skene accuracy (crowd-kit) is reported beside majority vote.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annotation.aggregate import aggregate, item_agreement, item_labels, screen_workers
from annotation.mapping import PrivateMapping
from surrogate.imageio import atomic_write_bytes, atomic_write_text
from surrogate.noise import STREAM_SUBSAMPLING, rng_for

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.75, 0.9)
_STREAM_SUBSAMPLE = STREAM_SUBSAMPLING
VERSION_NAMES = {"raw": "RAW", "gan": "GAN", "3d": "3-D", "photoreal": "photoreal"}
FIGURE_DPI = 300  # print resolution: a 4.8 x 3.2 inch figure is 1440 x 960 pixels


class ReportError(ValueError):
    """The labels cannot support the analysis asked for (no ground truth, unknown covariate ...)."""


@dataclass
class ReportOptions:
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS
    repeats: int = 200
    seed: int = 0
    covariate: str | None = None  # an attribute name, or the column of covariate_values
    covariate_values: Mapping[str, float] | None = None  # private id -> value (external score)
    bins: int = 6
    unambiguous: float | None = None  # also report accuracy where |covariate| >= this
    min_gold_accuracy: float = 0.0  # drop workers below this accuracy on gold items
    title: str = "Crowd labelling report"


@dataclass
class Analysis:
    """All numbers of a report; ``to_dict`` is the JSON written next to the markdown."""

    question: dict[str, Any]
    truth_source: str
    versions: list[str]
    n_faces: int
    n_truth_ties: int
    table: dict[str, dict[str, Any]]
    agreement: dict[str, list[float]]
    majority_over_n: dict[str, dict[str, list[float]]]
    binned: dict[str, Any] | None
    ttests: list[dict[str, Any]]
    workers: dict[str, Any]
    per_face: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "per_face"}
        out["per_face"] = self.per_face.to_dict("records")
        return _clean(out)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- analysis ------------------------------------------------------------------------------------
def ground_truth(
    labels: pd.DataFrame, mapping: PrivateMapping, truth: Mapping[str, str] | None = None
) -> tuple[dict[str, str], str, int]:
    """(private id -> true label, where it came from, number of raw ties left out)."""
    if truth is not None:
        unknown = sorted(set(truth.values()) - set(mapping.question.choices))
        if unknown:
            raise ReportError(f"truth labels {unknown} are not choices {list(mapping.question.choices)}")
        return dict(truth), "file", 0
    raw = labels[labels["method"] == "raw"]
    if raw.empty:
        raise ReportError(
            "no ground truth: the batch has no raw images (publish with --include-raw for a "
            "consenting pilot) and no --truth file was given"
        )
    per_task = aggregate(raw, "mv").set_index("task")
    ids = raw.drop_duplicates("task").set_index("task")["private_id"]
    untied = per_task[~per_task["tie"]]
    return (
        {ids[t]: str(lab) for t, lab in untied["label"].items()},
        "raw majority vote",
        int(per_task["tie"].sum()),
    )


def _vote_credit(task_labels: pd.DataFrame, truth: str) -> float:
    """1 if the majority is the truth, 1/k if the truth is among k tied modes, else 0."""
    counts = task_labels.value_counts()
    modes = counts[counts == counts.max()].index
    return 1.0 / len(modes) if truth in modes else 0.0


def majority_over_n(
    version_labels: pd.DataFrame,
    truth: Mapping[str, str],
    choices: Sequence[str],
    *,
    repeats: int,
    seed: int,
    stream: int,
) -> dict[str, list[float]]:
    """Figure 6: accuracy of the majority of n labels sampled per face, n = 3 .. fewest labels."""
    faces = sorted(set(version_labels["private_id"]) & set(truth))
    if not faces:
        return {"n": [], "accuracy": [], "sd": []}
    code = {c: i for i, c in enumerate(choices)}
    grouped = version_labels.groupby("private_id")["label"]
    per_face = [grouped.get_group(f).map(code).to_numpy() for f in faces]
    width = max(len(p) for p in per_face)
    n_max = min(len(p) for p in per_face)
    codes = np.full((len(faces), width), -1)
    for i, p in enumerate(per_face):
        codes[i, : len(p)] = p
    truth_codes = np.array([code[truth[f]] for f in faces])
    rng = rng_for(seed, stream)
    ns, means, sds = [], [], []
    for n in range(min(3, n_max), n_max + 1):
        keys = rng.random((repeats, len(faces), width))
        keys[:, codes < 0] = np.inf
        picked = np.take_along_axis(
            np.broadcast_to(codes, keys.shape), np.argsort(keys, axis=2)[:, :, :n], axis=2
        )
        votes = (picked[..., None] == np.arange(len(choices))).sum(axis=2).astype(float)
        votes += rng.random(votes.shape) * 0.5  # random tie break; never overturns a real majority
        accuracy = (votes.argmax(axis=2) == truth_codes).mean(axis=1)
        ns.append(n)
        means.append(float(accuracy.mean()))
        sds.append(float(accuracy.std()))
    return {"n": ns, "accuracy": means, "sd": sds}


def analyse(
    labels: pd.DataFrame,
    mapping: PrivateMapping,
    *,
    truth: Mapping[str, str] | None = None,
    options: ReportOptions | None = None,
) -> Analysis:
    """Run every analysis on tidy labels (worker, task, label) of one batch."""

    options = options or ReportOptions()
    screen = screen_workers(labels, mapping, options.min_gold_accuracy)
    items = item_labels(labels, mapping, exclude_workers=screen.failed)
    if items.empty:
        raise ReportError(
            "no labels on any item of this batch (only gold items, or all workers screened out)"
        )
    frame = mapping.frame().set_index("token")
    items = items.join(frame[["private_id", "method"]], on="task")
    truth_map, truth_source, n_ties = ground_truth(items, mapping, truth)
    items = items[items["private_id"].isin(truth_map)].copy()
    items["correct"] = items["label"] == items["private_id"].map(truth_map)
    versions = [v for v in mapping.methods if v in set(items["method"])]
    covariate = _covariate(mapping, options)

    table: dict[str, dict[str, Any]] = {}
    agreement: dict[str, list[float]] = {}
    over_n: dict[str, dict[str, list[float]]] = {}
    per_face_parts = []
    for v_index, version in enumerate(versions):
        lv = items[items["method"] == version]
        agree = item_agreement(lv).join(lv.drop_duplicates("task").set_index("task")["private_id"])
        credit = {
            t: _vote_credit(g["label"], truth_map[g["private_id"].iloc[0]]) for t, g in lv.groupby("task")
        }
        agree["vote_credit"] = agree.index.map(credit)
        ds = aggregate(lv, "ds").set_index("task")
        agree["ds_correct"] = [ds.at[t, "label"] == truth_map[p] for t, p in agree["private_id"].items()]
        face_accuracy = lv.groupby("private_id")["correct"].mean()
        agree["accuracy"] = agree["private_id"].map(face_accuracy)
        worker_accuracy = lv.groupby("worker")["correct"].mean()
        row: dict[str, Any] = {
            "n_faces": int(len(agree)),
            "n_labels": int(len(lv)),
            "n_workers": int(lv["worker"].nunique()),
            "avg_accuracy": float(lv["correct"].mean()),
            "worker_accuracy_mean": float(worker_accuracy.mean()),
            "worker_accuracy_sd": float(worker_accuracy.std(ddof=1))
            if len(worker_accuracy) > 1
            else float("nan"),
            "mv_accuracy": float(agree["vote_credit"].mean()),
            "ds_accuracy": float(agree["ds_correct"].mean()),
            "vote": {},
        }
        for threshold in options.thresholds:
            kept = agree[agree["agreement"] >= threshold - 1e-9]
            row["vote"][f"{threshold:g}"] = {
                "accuracy": float(kept["vote_credit"].mean()) if len(kept) else float("nan"),
                "n_faces": int(len(kept)),
                "coverage": float(len(kept) / len(agree)) if len(agree) else float("nan"),
            }
        if covariate is not None and options.unambiguous is not None:
            strong = agree[agree["private_id"].map(covariate).abs() >= options.unambiguous]
            row["unambiguous_accuracy"] = float(strong["accuracy"].mean()) if len(strong) else float("nan")
            row["unambiguous_n_faces"] = int(len(strong))
        table[version] = row
        agreement[version] = [float(a) for a in agree["agreement"]]
        over_n[version] = majority_over_n(
            lv,
            truth_map,
            mapping.question.choices,
            repeats=options.repeats,
            seed=options.seed,
            stream=_STREAM_SUBSAMPLE + v_index,
        )
        per_face_parts.append(
            agree.reset_index(drop=True).assign(method=version)[
                ["private_id", "method", "accuracy", "agreement", "vote_credit", "ds_correct"]
            ]
        )
    per_face = pd.concat(per_face_parts, ignore_index=True) if per_face_parts else pd.DataFrame()

    ttests = [_paired_tests(items, a, b) for a, b in combinations(versions, 2)]

    binned = None
    if covariate is not None:
        per_face["covariate"] = per_face["private_id"].map(covariate)
        binned = _bin(per_face, versions, options.bins, options.covariate or "covariate")

    gold = screen.scores
    workers = {
        "n_workers": int(labels["worker"].nunique()),
        "screened_out": screen.failed,
        "min_gold_accuracy": options.min_gold_accuracy,
        "gold_accuracy_mean": float(gold["gold_accuracy"].mean())
        if gold["gold_accuracy"].notna().any()
        else None,
        "n_gold_items": len(mapping.gold()),
    }
    return Analysis(
        question=mapping.question.to_dict(),
        truth_source=truth_source,
        versions=versions,
        n_faces=len(truth_map),
        n_truth_ties=n_ties,
        table=table,
        agreement=agreement,
        majority_over_n=over_n,
        binned=binned,
        ttests=ttests,
        workers=workers,
        per_face=per_face,
    )


def _one_sample_t(differences: pd.Series) -> tuple[float, float]:
    """(t, two-sided p) of a 1-sample t-test of ``differences`` against 0; NaN when undefined."""
    from scipy import stats

    differences = differences.dropna()
    if len(differences) < 2 or not differences.std() > 0:
        return float("nan"), float("nan")
    result = stats.ttest_1samp(differences, 0.0)
    return float(result.statistic), float(result.pvalue)


def _paired_tests(items: pd.DataFrame, a: str, b: str) -> dict[str, Any]:
    """Versions ``a`` and ``b`` compared three ways (all paired, two-sided).

    * per face, the share of its labellers who were right (``t``, ``p``): robust to unequal counts;
    * per face, the number of labellers who were right (``t_count``, ``p_count``): the paper's test.
      The two agree only when every face has as many labels in ``a`` as in ``b``; a few rejected or
      missing labels are enough to move t;
    * per worker, accuracy on ``a`` minus accuracy on ``b`` over workers who labelled both
      (``t_worker``, ``p_worker``): the within-worker comparison the paper's design allows, where
      every worker saw every version in one session.
    """
    share = items.groupby(["private_id", "method"])["correct"].mean().unstack("method")
    count = items.groupby(["private_id", "method"])["correct"].sum().unstack("method")
    by_worker = items.groupby(["worker", "method"])["correct"].mean().unstack("method")
    faces = share[[a, b]].dropna().index
    share_diff = share.loc[faces, a] - share.loc[faces, b]
    count_diff = count.loc[faces, a] - count.loc[faces, b]
    worker_diff = (by_worker[a] - by_worker[b]).dropna() if {a, b} <= set(by_worker) else pd.Series(dtype=float)
    entry: dict[str, Any] = {"a": a, "b": b, "n_faces": int(len(faces)), "n_workers": int(len(worker_diff))}
    for suffix, differences in (("", share_diff), ("_count", count_diff), ("_worker", worker_diff)):
        # the share test equals scipy's ttest_rel on the paired per-face shares
        t_value, p_value = _one_sample_t(differences)
        entry[f"mean_difference{suffix}"] = float(differences.mean()) if len(differences) else float("nan")
        entry[f"t{suffix}"], entry[f"p{suffix}"] = t_value, p_value
    t = entry["t"]
    if not math.isfinite(t):
        entry["note"] = "fewer than 2 faces or no variance in the differences"
    return entry


def _covariate(mapping: PrivateMapping, options: ReportOptions) -> dict[str, float] | None:
    if options.covariate_values is not None:
        return {str(k): float(v) for k, v in options.covariate_values.items()}
    if options.covariate is None:
        return None
    if options.covariate not in mapping.schema:
        raise ReportError(
            f"covariate {options.covariate!r} is not an attribute of this batch "
            f"({list(mapping.schema.names)}); pass a --covariates file for external scores"
        )
    return {e.private_id: mapping.attribute(e, options.covariate) for e in mapping.items() if e.private_id}


def _bin(per_face: pd.DataFrame, versions: Sequence[str], bins: int, name: str) -> dict[str, Any]:
    values = per_face["covariate"].dropna()
    if values.empty:
        raise ReportError(f"no face has a value for covariate {name!r}")
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    out: dict[str, Any] = {
        "covariate": name,
        "edges": edges.tolist(),
        "centres": ((edges[:-1] + edges[1:]) / 2).tolist(),
    }
    for version in versions:
        part = per_face[(per_face["method"] == version) & per_face["covariate"].notna()]
        index = np.clip(np.digitize(part["covariate"], edges[1:-1]), 0, bins - 1)
        grouped = part.groupby(index)["accuracy"]
        mean, count, sem = grouped.mean(), grouped.size(), grouped.sem()
        out[version] = {
            "accuracy": [float(mean.get(b, np.nan)) for b in range(bins)],
            "n_faces": [int(count.get(b, 0)) for b in range(bins)],
            "sem": [float(sem.get(b, np.nan)) for b in range(bins)],
        }
    return out


# -- output ----------------------------------------------------------------------------------------
def _save_figure(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())


def _plots(analysis: Analysis, out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, str] = {}
    versions = analysis.versions
    k = len(analysis.question["choices"])
    fig, axes = plt.subplots(1, len(versions), figsize=(3.2 * len(versions), 2.8), sharey=True, squeeze=False)
    for ax, version in zip(axes[0], versions, strict=True):
        ax.hist(
            analysis.agreement[version], bins=np.linspace(1.0 / k, 1.0, 6), color="#4477aa", edgecolor="white"
        )
        ax.set_title(VERSION_NAMES.get(version, version))
        ax.set_xlabel("agreement")
    axes[0][0].set_ylabel("faces")
    fig.suptitle("Figure 5: label agreement per face")
    fig.tight_layout()
    _save_figure(fig, out_dir / "agreement_histogram.png")
    plt.close(fig)
    files["agreement"] = "agreement_histogram.png"

    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for version in versions:
        curve = analysis.majority_over_n[version]
        (line,) = ax.plot(curve["n"], curve["accuracy"], marker=".", label=VERSION_NAMES.get(version, version))
        low = np.asarray(curve["accuracy"]) - np.asarray(curve["sd"])
        high = np.asarray(curve["accuracy"]) + np.asarray(curve["sd"])
        ax.fill_between(curve["n"], low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("labellers sampled per face (n); band: +-1 sd over draws")
    ax.set_ylabel("majority-vote accuracy")
    ax.set_title("Figure 6: majority vote over n labellers")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, out_dir / "majority_vote_over_n.png")
    plt.close(fig)
    files["majority_over_n"] = "majority_vote_over_n.png"

    if analysis.binned is not None:
        binned = analysis.binned
        fig, ax = plt.subplots(figsize=(4.8, 3.2))
        for version in versions:
            mean, sem = np.asarray(binned[version]["accuracy"]), np.asarray(binned[version]["sem"])
            (line,) = ax.plot(binned["centres"], mean, marker="o", label=VERSION_NAMES.get(version, version))
            ax.fill_between(binned["centres"], mean - sem, mean + sem, color=line.get_color(), alpha=0.2, linewidth=0)
        counts = np.max([binned[v]["n_faces"] for v in versions], axis=0)
        ax.set_xticks(binned["centres"], [f"{c:.2g}\nn={n}" for c, n in zip(binned["centres"], counts, strict=True)])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(f"{binned['covariate']} (bin centre, faces per bin); band: +-1 s.e.m.")
        ax.set_ylabel("mean per-face accuracy")
        ax.set_title(f"Figures 7-8: accuracy by {binned['covariate']}")
        ax.legend()
        fig.tight_layout()
        name = f"accuracy_by_{_slug(binned['covariate'])}.png"
        _save_figure(fig, out_dir / name)
        plt.close(fig)
        files["binned"] = name
    return files


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_") or "covariate"


def _pct(value: Any) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else f"{100 * value:.1f}"
    )


def render_markdown(analysis: Analysis, figures: Mapping[str, str], title: str) -> str:
    q = analysis.question
    thresholds = list(next(iter(analysis.table.values()))["vote"]) if analysis.table else []
    lines = [
        f"# {title}",
        "",
        f"Question: *{q['text']}* (choices: {', '.join(q['choices'])}).",
        f"Ground truth: {analysis.truth_source} for {analysis.n_faces} faces"
        + (
            f" ({analysis.n_truth_ties} faces with a tied raw vote left out)."
            if analysis.n_truth_ties
            else "."
        ),
        f"Workers: {analysis.workers['n_workers']}"
        + (
            f"; screened out on gold items: {', '.join(analysis.workers['screened_out'])}"
            if analysis.workers["screened_out"]
            else ""
        )
        + ".",
        "",
        "## Table 1: accuracy (%)",
        "",
        "| Version | Avg (individual) | "
        + " | ".join(f"Vote (>= {float(t) * 100:g}%)" for t in thresholds)
        + " | Dawid-Skene | faces | labels |",
        "|---|---:|" + "---:|" * len(thresholds) + "---:|---:|---:|",
    ]
    raw_is_truth = analysis.truth_source.startswith("raw")
    for version, row in analysis.table.items():
        votes = _vote_cells(row, thresholds, hide=raw_is_truth and version == "raw")
        ds = _pct(row["ds_accuracy"])
        lines.append(
            f"| {VERSION_NAMES.get(version, version)} | {_pct(row['avg_accuracy'])} | "
            + " | ".join(votes)
            + f" | {ds} | {row['n_faces']} | {row['n_labels']} |"
        )
    lines += [
        "",
        "Vote cells give accuracy (number of faces with that consensus). "
        + (
            "Raw vote columns are 100% by definition (raw majority is the ground truth) and are not shown."
            if raw_is_truth
            else ""
        ),
        "",
    ]
    if any("unambiguous_accuracy" in row for row in analysis.table.values()):
        lines += [
            "Accuracy on unambiguous faces (|covariate| >= threshold): "
            + ", ".join(
                f"{VERSION_NAMES.get(v, v)} {_pct(r['unambiguous_accuracy'])}% "
                f"({r['unambiguous_n_faces']} faces)"
                for v, r in analysis.table.items()
            ),
            "",
        ]
    lines += [
        "## Paired t-tests",
        "",
        "Per face: share of its labellers who were right (robust to unequal label counts) and number of",
        "labellers who were right (the paper's test; the two agree only with equal label counts). Per worker:",
        "accuracy on one version minus the other, over workers who labelled both (within-worker).",
        "",
        "| Pair | share diff | t | p | count diff | t | p | faces | worker diff | t | p | workers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in analysis.ttests:
        lines.append(
            f"| {VERSION_NAMES.get(t['a'], t['a'])} - {VERSION_NAMES.get(t['b'], t['b'])} | "
            f"{_pct(t['mean_difference'])} pts | {_num(t['t'])} | {_p(t['p'])} | "
            f"{_num(t.get('mean_difference_count'))} | {_num(t.get('t_count'))} | {_p(t.get('p_count'))} | "
            f"{t['n_faces']} | {_pct(t.get('mean_difference_worker'))} pts | {_num(t.get('t_worker'))} | "
            f"{_p(t.get('p_worker'))} | {t.get('n_workers', 0)} |"
        )
    lines += [
        "",
        "## Figure 5: agreement",
        "",
        f"![agreement]({figures['agreement']})",
        "",
        "## Figure 6: majority vote over n labellers",
        "",
        f"![majority vote]({figures['majority_over_n']})",
        "",
    ]
    for version, curve in analysis.majority_over_n.items():
        if curve["n"]:
            lines.append(
                f"- {VERSION_NAMES.get(version, version)}: n={curve['n'][0]}: {_pct(curve['accuracy'][0])}%, "
                f"n={curve['n'][-1]}: {_pct(curve['accuracy'][-1])}%"
            )
    if analysis.binned is not None:
        b = analysis.binned
        lines += [
            "",
            f"## Figures 7-8: accuracy by {b['covariate']}",
            "",
            f"![binned]({figures['binned']})",
            "",
            "| bin centre | " + " | ".join(VERSION_NAMES.get(v, v) for v in analysis.versions) + " |",
            "|---:|" + "---:|" * len(analysis.versions),
        ]
        for i, centre in enumerate(b["centres"]):
            lines.append(
                f"| {centre:.2f} | "
                + " | ".join(f"{_pct(b[v]['accuracy'][i])} ({b[v]['n_faces'][i]})" for v in analysis.versions)
                + " |"
            )
    pairs = [(key, name) for key, name in figures.items() if key.startswith("lowest_")]
    if pairs:
        lines += [
            "",
            "## Figures 9-10: faces whose surrogate was labelled worst (PRIVATE: shows the raw images)",
            "",
        ]
        for key, name in pairs:
            lines += [f"![{key}]({name})", ""]
    lines += ["", "All numbers: `report.json`.", ""]
    return "\n".join(lines)


def _vote_cells(row: Mapping[str, Any], thresholds: Sequence[str], *, hide: bool) -> list[str]:
    """Table 1's vote cells: accuracy (faces); hidden for raw when the raw vote is the truth."""
    return ["-" if hide else f"{_pct(row['vote'][t]['accuracy'])} ({row['vote'][t]['n_faces']})" for t in thresholds]


def _num(value: Any, digits: int = 2) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else f"{value:.{digits}f}"
    )


def _p(value: Any) -> str:
    """A p-value that never reads as 0: scientific notation below 0.0001."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


ImageLoader = Callable[[str, str], "np.ndarray | None"]  # (private id, version) -> image, or None


def batch_images(
    mapping: PrivateMapping, batch_dir: str | os.PathLike[str] | None, image_root: str | os.PathLike[str] | None
) -> ImageLoader:
    """Images of a face's versions: from the batch folder, raw photos also from the private files."""
    from annotation.batch import IMAGES_DIR
    from surrogate.imageio import load_image

    entries = {(e.private_id, e.method): e for e in mapping.items()}
    files = {e.private_id: e.file for e in mapping.items() if e.file}

    def load(private_id: str, version: str) -> np.ndarray | None:
        entry = entries.get((private_id, version))
        if entry is not None and batch_dir is not None:
            path = Path(batch_dir) / IMAGES_DIR / f"{entry.token}.png"
            if path.is_file():
                return load_image(path)
        if version == "raw" and files.get(private_id):
            path = Path(files[private_id])
            path = path if path.is_absolute() or image_root is None else Path(image_root) / path
            if path.is_file():
                return load_image(path)
        return None

    return load


def _lowest_pairs(analysis: Analysis, version: str, images: ImageLoader, path: Path, n: int = 10) -> bool:
    """Figures 9-10: the ``n`` faces whose ``version`` was labelled least accurately, above their raw image."""
    import matplotlib.pyplot as plt

    faces = analysis.per_face
    accuracy = faces.pivot(index="private_id", columns="method", values="accuracy")
    if version not in accuracy:
        return False
    worst = accuracy[version].dropna().sort_values(kind="stable").index[:n]
    if not len(worst):
        return False
    fig, axes = plt.subplots(2, len(worst), figsize=(1.3 * len(worst), 3.0), squeeze=False)
    for column, face in enumerate(worst):
        for row, shown in enumerate(("raw", version)):
            ax = axes[row][column]
            ax.axis("off")
            image = images(face, shown)
            if image is not None:
                ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            value = accuracy.at[face, shown] if shown in accuracy else float("nan")
            ax.set_title(f"{VERSION_NAMES.get(shown, shown)} {_pct(value)}%", fontsize=7)
    fig.suptitle(f"lowest-accuracy {VERSION_NAMES.get(version, version)} surrogates (top: raw photo)", fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True


def write_report(
    analysis: Analysis,
    out_dir: str | os.PathLike[str],
    *,
    title: str = "Crowd labelling report",
    images: ImageLoader | None = None,
) -> list[Path]:
    """Write report.md, report.json and the PNG figures into ``out_dir`` (atomically, file by file).

    With ``images`` (see ``batch_images``) also Figures 9-10, one per surrogate version: the faces
    whose surrogate was labelled worst beside their raw image. Those figures show private faces.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _plots(analysis, out_dir)
    if images is not None:
        for number, version in enumerate([v for v in analysis.versions if v != "raw"], start=9):
            name = f"figure{number}_lowest_{_slug(version)}.png"
            if _lowest_pairs(analysis, version, images, out_dir / name):
                figures[f"lowest_{version}"] = name
    atomic_write_text(out_dir / "report.json", json.dumps(analysis.to_dict(), indent=1) + "\n")
    atomic_write_text(out_dir / "report.md", render_markdown(analysis, figures, title))
    return [out_dir / "report.md", out_dir / "report.json", *(out_dir / f for f in figures.values())]


def joint_table(paths: Sequence[str | os.PathLike[str]]) -> str:
    """Markdown: Table 1 of several tasks (one report.json each), one row per task and version."""
    rows, thresholds = [], None
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            question, table = data["question"], data["table"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReportError(f"{path}: not a report.json written by 'surrogate annotate report' ({exc})") from exc
        raw_is_truth = str(data.get("truth_source", "")).startswith("raw")
        for version, row in table.items():
            thresholds = thresholds or list(row["vote"])
            votes = _vote_cells(row, thresholds, hide=raw_is_truth and version == "raw")
            task = question.get("choices", ["?"])[0]
            rows.append(
                f"| {task} | {VERSION_NAMES.get(version, version)} | {_pct(row['avg_accuracy'])} | "
                + " | ".join(votes)
                + f" | {_pct(row['ds_accuracy'])} | {row['n_faces']} |"
            )
    thresholds = thresholds or []
    header = (
        "| Task | Version | Avg | "
        + " | ".join(f"Vote (>= {float(t) * 100:g}%)" for t in thresholds)
        + " | Dawid-Skene | faces |"
    )
    rule = "|---|---|---:|" + "---:|" * len(thresholds) + "---:|---:|"
    return "\n".join(["# Table 1, all tasks: accuracy (%)", "", header, rule, *rows, ""])
