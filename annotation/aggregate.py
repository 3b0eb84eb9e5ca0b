"""Aggregate crowd labels per task with crowd-kit, and carry them back to the private ids.

Aggregation is crowd-kit's (``MajorityVote``, ``DawidSkene``); this module adds what the paper reads
off each item: agreement (the fraction of labellers who gave the modal label, 0.5-1 for two choices),
ties, and, through the private mapping, the private id each label belongs to. Gold (known-answer)
items are scored per worker and never transferred.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from annotation.mapping import KIND_GOLD, KIND_ITEM, PrivateMapping
from surrogate.imageio import atomic_write_text

AGGREGATORS: tuple[str, ...] = ("mv", "ds")
AGGREGATE_COLUMNS: tuple[str, ...] = ("task", "label", "agreement", "n_labels", "tie", "confidence")
TRANSFER_COLUMNS: tuple[str, ...] = (
    "private_id",
    "method",
    "label",
    "agreement",
    "n_labels",
    "tie",
    "confidence",
)


class AggregationError(ValueError):
    """Labels that cannot be aggregated (empty, wrong columns, unknown method)."""


def _crowdkit_frame(labels: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("worker", "task", "label") if c not in labels.columns]
    if missing:
        raise AggregationError(f"labels lack column(s) {missing}")
    if labels.empty:
        raise AggregationError("no labels to aggregate")
    return labels.loc[:, ["worker", "task", "label"]].astype(str).reset_index(drop=True)


def item_agreement(labels: pd.DataFrame) -> pd.DataFrame:
    """Per task: the modal label's share (agreement), number of labels, and whether the mode is tied."""
    data = _crowdkit_frame(labels)
    counts = data.groupby(["task", "label"]).size().unstack("label", fill_value=0)
    totals = counts.sum(axis=1)
    top = counts.max(axis=1)
    ties = (counts.eq(top, axis=0)).sum(axis=1) > 1
    return pd.DataFrame({"agreement": top / totals, "n_labels": totals.astype(int), "tie": ties})


def aggregate(labels: pd.DataFrame, method: str = "mv", *, n_iter: int = 100) -> pd.DataFrame:
    """Aggregate per task with crowd-kit: columns task, label, agreement, n_labels, tie, confidence.

    ``confidence`` is the aggregator's posterior probability of the chosen label (for majority vote
    the vote share). ``tie`` flags tasks whose modal vote is split (under either aggregator: Dawid-Skene
    breaks it by worker quality, majority vote by crowd-kit's column order) so callers can discard them.
    """
    from crowdkit.aggregation import DawidSkene, MajorityVote

    data = _crowdkit_frame(labels)
    if method not in AGGREGATORS:
        raise AggregationError(f"unknown aggregation method {method!r}; choose from {list(AGGREGATORS)}")
    with warnings.catch_warnings():
        # crowd-kit 1.4.2 uses pandas keywords (inplace=, copy=) deprecated in pandas 3; results unaffected
        warnings.filterwarnings("ignore", module=r"crowdkit\.")
        model = MajorityVote().fit(data) if method == "mv" else DawidSkene(n_iter=n_iter).fit(data)
    chosen = model.labels_.astype(str)
    probas = model.probas_
    confidence = pd.Series(
        [float(probas.at[task, label]) for task, label in chosen.items()], index=chosen.index
    )
    agreement = item_agreement(data)
    # ``tie`` says the votes were split evenly, whichever label the aggregator then picked
    out = pd.DataFrame({"label": chosen, "confidence": confidence}).join(agreement)
    out.index.name = "task"
    return out.reset_index().loc[:, list(AGGREGATE_COLUMNS)].sort_values("task").reset_index(drop=True)


@dataclass
class WorkerScreen:
    """Per-worker accuracy on gold items, and who fails the attention check."""

    scores: pd.DataFrame  # worker, gold_answered, gold_correct, gold_accuracy, passed
    min_accuracy: float

    @property
    def failed(self) -> list[str]:
        return self.scores.loc[~self.scores["passed"], "worker"].tolist()


def screen_workers(labels: pd.DataFrame, mapping: PrivateMapping, min_accuracy: float = 0.0) -> WorkerScreen:
    """Score every worker on the gold items they answered; workers with no gold answers pass."""
    gold = {e.token: e.gold_label for e in mapping.gold()}
    on_gold = labels[labels["task"].isin(gold)].copy()
    on_gold["correct"] = on_gold["label"] == on_gold["task"].map(gold)
    per = (
        on_gold.groupby("worker")["correct"]
        .agg(["size", "sum"])
        .rename(columns={"size": "gold_answered", "sum": "gold_correct"})
    )
    workers = pd.DataFrame(index=pd.Index(sorted(labels["worker"].astype(str).unique()), name="worker"))
    scores = workers.join(per).fillna(0)
    scores["gold_answered"] = scores["gold_answered"].astype(int)
    scores["gold_correct"] = scores["gold_correct"].astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores["gold_accuracy"] = scores["gold_correct"] / scores["gold_answered"].replace(0, np.nan)
    scores["passed"] = scores["gold_accuracy"].isna() | (scores["gold_accuracy"] >= min_accuracy)
    return WorkerScreen(scores=scores.reset_index(), min_accuracy=min_accuracy)


def item_labels(
    labels: pd.DataFrame, mapping: PrivateMapping, *, exclude_workers: list[str] | None = None
) -> pd.DataFrame:
    """Labels of real items only (gold tasks removed), optionally without screened-out workers."""
    items = {e.token for e in mapping.entries if e.kind == KIND_ITEM}
    keep = labels["task"].isin(items)
    if exclude_workers:
        keep &= ~labels["worker"].isin(set(exclude_workers))
    return labels[keep].reset_index(drop=True)


def transfer(aggregated: pd.DataFrame, mapping: PrivateMapping) -> pd.DataFrame:
    """Aggregated labels per task -> per private id and method (gold tasks are dropped).

    Columns: private_id, method, label, agreement, n_labels, tie, confidence. A private id whose task
    received no label is listed with an empty label and n_labels 0, so nothing is silently missing.
    """
    by_task = aggregated.set_index("task")
    rows = []
    for entry in mapping.entries:
        if entry.kind == KIND_GOLD:
            continue
        if entry.token in by_task.index:
            r = by_task.loc[entry.token]
            rows.append(
                (
                    entry.private_id,
                    entry.method,
                    r["label"],
                    float(r["agreement"]),
                    int(r["n_labels"]),
                    bool(r["tie"]),
                    float(r["confidence"]),
                )
            )
        else:
            rows.append((entry.private_id, entry.method, "", float("nan"), 0, False, float("nan")))
    out = pd.DataFrame(rows, columns=list(TRANSFER_COLUMNS))
    order = {m: i for i, m in enumerate(("raw", "gan", "3d", "photoreal"))}
    return out.sort_values(
        ["private_id", "method"], key=lambda s: s.map(order) if s.name == "method" else s
    ).reset_index(drop=True)


FACE_COLUMNS: tuple[str, ...] = ("private_id", "label", "confidence", "agreement", "n_labels", "tie", "versions")


def face_labels(
    labels: pd.DataFrame, mapping: PrivateMapping, *, versions: list[str] | None = None, method: str = "ds"
) -> pd.DataFrame:
    """One label per private face combining its surrogate versions (default: every non-raw version).

    All labels of a face's versions are aggregated together, with each (worker, version) as its own
    labeller: a worker who saw both surrogates of a face casts two votes, and Dawid-Skene learns how
    reliable that worker is on each kind of surrogate. ``confidence`` is the aggregator's posterior
    of the label (the vote share for majority vote).
    """
    versions = versions or [m for m in mapping.methods if m != "raw"]
    face_of = {e.token: e.private_id for e in mapping.items(versions)}
    version_of = {e.token: e.method for e in mapping.items(versions)}
    kept = labels[labels["task"].isin(face_of)]
    if kept.empty:
        raise AggregationError(f"no labels on any {'/'.join(versions)} item")
    combined = pd.DataFrame(
        {
            "worker": kept["worker"].astype(str) + "|" + kept["task"].map(version_of),
            "task": kept["task"].map(face_of),
            "label": kept["label"],
        }
    )
    out = aggregate(combined, method).rename(columns={"task": "private_id"})
    out["versions"] = "+".join(versions)
    return out.loc[:, list(FACE_COLUMNS)]


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, frame.to_csv(index=False))
