"""A crowd simulator: labellers with per-version accuracy, item difficulty and spammers.

It exists to test the round trip without a real crowd: it answers a real published batch (through its
private mapping), writes the answers in the platforms' own result formats (an MTurk batch results CSV
or a Label Studio export JSON), and knows the accuracy it simulated, so a test can check that
``report`` recovers it and that Dawid-Skene beats majority vote when spammers are present.

Model, per task (face i shown as version v) and honest worker w::

    p_correct = a_v + s_w - (a_v + s_w - 1/K) * difficulty_i        clipped to [1/K, 0.995]

``a_v`` is the accuracy of a typical labeller on an easy face of version v, ``s_w ~ N(0, worker_sd)``
a worker's skill offset, ``difficulty_i`` in [0, 1] pulls the answer towards chance (K choices). A
wrong answer is uniform over the other choices. Gold items (unambiguous by design) are answered at
``gold_accuracy`` + s_w instead of a_v. Spammers answer uniformly at random ("random") or
always the same choice ("constant").
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from annotation.mapping import MappingEntry, PrivateMapping, task_url
from annotation.question import Question
from surrogate.imageio import atomic_write_text
from surrogate.noise import STREAM_CROWD_SIMULATION, rng_for

_STREAM_CROWD = STREAM_CROWD_SIMULATION
SPAMMER_MODES: tuple[str, ...] = ("random", "constant")


@dataclass
class CrowdConfig:
    """How the simulated crowd behaves."""

    accuracy: Mapping[str, float] = field(default_factory=lambda: {"raw": 0.92, "gan": 0.8, "3d": 0.78})
    n_workers: int = 30
    labels_per_task: int | None = None  # None: every worker labels every task (the paper's design)
    spammer_fraction: float = 0.0
    spammer_mode: str = "random"
    worker_sd: float = 0.04
    rejected_fraction: float = 0.0  # MTurk assignments the requester rejected (excluded on import)
    # Gold items are chosen to be unambiguous, so an honest worker gets them right more often than
    # an ordinary face of the same version (drawing them at ``accuracy`` screened out honest workers).
    gold_accuracy: float = 0.97
    seed: int = 0

    def check(self, versions: list[str], n_choices: int) -> None:
        missing = [v for v in versions if v not in self.accuracy]
        if missing:
            raise ValueError(
                f"no simulated accuracy for version(s) {missing}; give e.g. --accuracy {missing[0]}=0.8"
            )
        for version, a in self.accuracy.items():
            if not 1.0 / n_choices <= a <= 1.0:
                raise ValueError(f"accuracy of {version} must be in [1/{n_choices}, 1], got {a}")
        if self.n_workers < 1:
            raise ValueError("n_workers must be >= 1")
        if self.labels_per_task is not None and not 1 <= self.labels_per_task <= self.n_workers:
            raise ValueError(f"labels_per_task must be in [1, n_workers={self.n_workers}]")
        if not 0.0 <= self.spammer_fraction < 1.0:
            raise ValueError("spammer_fraction must be in [0, 1)")
        if self.spammer_mode not in SPAMMER_MODES:
            raise ValueError(f"spammer_mode must be one of {SPAMMER_MODES}")
        if not 1.0 / n_choices <= self.gold_accuracy <= 1.0:
            raise ValueError(f"gold_accuracy must be in [1/{n_choices}, 1], got {self.gold_accuracy}")
        if not 0.0 <= self.rejected_fraction < 1.0:
            raise ValueError("rejected_fraction must be in [0, 1)")


@dataclass
class SimulatedCrowd:
    """The simulated answers and what they were drawn from."""

    labels: pd.DataFrame  # worker, task, label, time_s, assignment, status
    workers: pd.DataFrame  # worker, spammer, skill
    expected_accuracy: dict[str, float]  # per version: mean p(correct) over the labels drawn


def truth_from_attribute(mapping: PrivateMapping, attribute: str, threshold: float) -> dict[str, str]:
    """First choice when ``attribute`` >= threshold (e.g. AU12 >= 2 -> joy), else the second."""
    if attribute not in mapping.schema:
        raise ValueError(f"unknown attribute {attribute!r}; known: {list(mapping.schema.names)}")
    yes, no = mapping.question.choices[:2]
    return {
        e.private_id: (yes if mapping.attribute(e, attribute) >= threshold else no)
        for e in mapping.items()
        if e.private_id is not None
    }


def difficulty_from_attribute(
    mapping: PrivateMapping, attribute: str, threshold: float, scale: float = 1.0
) -> dict[str, float]:
    """Faces near the decision threshold are hard: difficulty = exp(-|x - threshold| / scale)."""
    return {
        e.private_id: math.exp(-abs(mapping.attribute(e, attribute) - threshold) / scale)
        for e in mapping.items()
        if e.private_id is not None
    }


def _canonical(entry: MappingEntry) -> tuple:
    return (entry.kind, entry.private_id or "", entry.method, entry.gold_label or "", entry.attributes)


def simulate_crowd(
    mapping: PrivateMapping,
    truth: Mapping[str, str],
    config: CrowdConfig,
    difficulty: Mapping[str, float] | None = None,
) -> SimulatedCrowd:
    """Draw answers for every task of ``mapping`` (gold items are easy and have their known answer).

    A session batch (the paper's design) gets ``n_workers`` workers per session, each answering every
    task of the session in its order; rejection then applies to a whole session (one assignment).
    """
    choices = list(mapping.question.choices)
    k = len(choices)
    config.check(mapping.methods, k)
    rng = rng_for(config.seed, _STREAM_CROWD)
    n_total = config.n_workers * max(1, len(mapping.sessions))
    n_spammers = int(round(config.spammer_fraction * n_total))
    workers = pd.DataFrame(
        {
            "worker": [f"W{i:04d}" for i in range(n_total)],
            "spammer": [i < n_spammers for i in range(n_total)],
            "skill": rng.normal(0.0, config.worker_sd, n_total),
            "constant_choice": rng.integers(0, k, n_total),
        }
    )
    workers = workers.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    if mapping.sessions:
        n = config.n_workers
        # drawn in a canonical order, not the session's secret one, so a seed gives the same crowd
        plan = [
            (entry, np.arange(s * n, (s + 1) * n), session.id)
            for s, session in enumerate(mapping.sessions)
            for entry in sorted((mapping[t] for t in session.tokens), key=_canonical)
        ]
    else:
        plan = [(entry, None, "") for entry in mapping.entries]
    rows = []
    expected: dict[str, list[float]] = {}
    for entry, crowd, session_id in plan:
        if entry.kind == "gold":
            true_label, hardness, version = entry.gold_label, 0.0, entry.method
        else:
            if entry.private_id not in truth:
                continue
            true_label = truth[entry.private_id]
            hardness = float(difficulty.get(entry.private_id, 0.0)) if difficulty else 0.0
            version = entry.method
        true_index = choices.index(true_label)
        if crowd is not None:
            who = crowd
        elif config.labels_per_task is None:
            who = np.arange(config.n_workers)
        else:
            who = rng.choice(config.n_workers, size=config.labels_per_task, replace=False)
        for w in who:
            worker = workers.iloc[w]
            if worker["spammer"]:
                if config.spammer_mode == "random":
                    answer, p = int(rng.integers(0, k)), 1.0 / k
                else:
                    answer = int(worker["constant_choice"])
                    p = float(answer == true_index)
            else:
                typical = config.gold_accuracy if entry.kind == "gold" else config.accuracy[version]
                base = typical + worker["skill"]
                p = float(np.clip(base - (base - 1.0 / k) * hardness, 1.0 / k, 0.995))
                if rng.random() < p:
                    answer = true_index
                else:
                    answer = int(rng.choice([c for c in range(k) if c != true_index]))
            if entry.kind != "gold":
                expected.setdefault(version, []).append(p)
            rows.append(
                (
                    worker["worker"],
                    entry.token,
                    choices[answer],
                    float(np.round(rng.gamma(4.0, 1.5), 1)),
                    session_id,
                )
            )
    labels = pd.DataFrame(rows, columns=["worker", "task", "label", "time_s", "session"])
    if mapping.sessions:  # one assignment per worker and session, accepted or rejected as a whole
        pairs = labels[["worker", "session"]].drop_duplicates().reset_index(drop=True)
        pairs["assignment"] = [f"A{i:08X}" for i in range(len(pairs))]
        pairs["status"] = np.where(rng.random(len(pairs)) < config.rejected_fraction, "Rejected", "Approved")
        labels = labels.merge(pairs, on=["worker", "session"], how="left")
    else:
        labels["assignment"] = [f"A{i:08X}" for i in range(len(labels))]
        labels["status"] = np.where(rng.random(len(labels)) < config.rejected_fraction, "Rejected", "Approved")
    return SimulatedCrowd(
        labels=labels,
        workers=workers.drop(columns="constant_choice"),
        expected_accuracy={v: float(np.mean(p)) for v, p in expected.items()},
    )


# -- writers in the platforms' own formats ---------------------------------------------------------------
def _hit_record(q: Question, hit: str, assignment: str, worker: str, status: str, time_s: float, n: int) -> dict:
    """The columns MTurk writes for every assignment, before Input.* and Answer.*."""
    return {
        "HITId": hit,
        "HITTypeId": "3TYPE0000000001",
        "Title": q.text,
        "Reward": "$0.05",
        "MaxAssignments": n,
        "AssignmentId": assignment,
        "WorkerId": worker,
        "AssignmentStatus": status,
        "AcceptTime": "Mon Jan 01 10:00:00 PST 2024",
        "SubmitTime": "Mon Jan 01 10:00:10 PST 2024",
        "WorkTimeInSeconds": int(round(time_s)),
        "LifetimeApprovalRate": "100% (10/10)",
    }


def _radio_answer(q: Question, name: str, label: str) -> dict[str, str]:
    return {f"Answer.{name}.option_{i}.{c}": "true" if label == c else "false" for i, c in enumerate(q.choices)}


def write_mturk_results(crowd: SimulatedCrowd, mapping: PrivateMapping, path: str | os.PathLike[str]) -> None:
    """An MTurk batch results CSV as the requester site gives it, passed once through pandas (so it
    has the leading unnamed index column), with the answer as MTurk writes the published template's
    ``<crowd-radio-group>`` under ``answer-format="flatten-objects"``: AWS's documented output
    ``{"<q>.option_N": {"<choice>": true|false}}`` as one ``Answer.<q>.option_N.<choice>`` column per
    button. A session batch has one row per worker and session, with every slot's input and answer.
    """
    q = mapping.question
    n = crowd.labels["worker"].nunique()
    records = []
    if mapping.sessions:
        for s, session in enumerate(mapping.sessions):
            part = crowd.labels[crowd.labels["session"] == session.id]
            for (worker, assignment, status), answers in part.groupby(["worker", "assignment", "status"], sort=False):
                label_of = dict(zip(answers["task"], answers["label"], strict=True))
                record = _hit_record(q, f"3HIT{s:010d}", assignment, worker, status, answers["time_s"].sum(), n)
                record["Input.session"] = session.id
                for slot, token in enumerate(session.tokens):
                    record[f"Input.image_url_{slot}"] = task_url(mapping.url_prefix, token)
                    record[f"Input.token_{slot}"] = token
                for slot, token in enumerate(session.tokens):
                    record.update(_radio_answer(q, f"{q.name}.slot{slot}", label_of.get(token, "")))
                records.append(record)
    else:
        hit_of = {token: f"3HIT{i:010d}" for i, token in enumerate(mapping.tokens)}
        for r in crowd.labels.itertuples():
            record = _hit_record(q, hit_of[r.task], r.assignment, r.worker, r.status, r.time_s, n)
            record["Input.image_url"] = task_url(mapping.url_prefix, r.task)
            record["Input.token"] = r.task
            record.update(_radio_answer(q, q.name, r.label))
            records.append(record)
    atomic_write_text(path, pd.DataFrame(records).to_csv(index=True))


def write_labelstudio_export(
    crowd: SimulatedCrowd, mapping: PrivateMapping, path: str | os.PathLike[str]
) -> None:
    """A Label Studio JSON export: tasks with annotations (completed_by = numeric user id).

    Rejected answers are written as cancelled (skipped) annotations, Label Studio's nearest notion.
    A session batch has one task per session whose annotations answer ``<question>_<index>``, as
    Label Studio's Repeater names them.
    """
    q = mapping.question
    user_id = {w: 100 + i for i, w in enumerate(sorted(crowd.labels["worker"].unique()))}
    if mapping.sessions:
        units = [
            (
                {f"{q.name}_{k}": t for k, t in enumerate(x.tokens)},
                {"session": x.id, "images": [{"image": task_url(mapping.url_prefix, t), "token": t} for t in x.tokens]},
            )
            for x in mapping.sessions
        ]
    else:
        units = [({q.name: t}, {"image": task_url(mapping.url_prefix, t), "token": t}) for t in mapping.tokens]
    # gold items recur in every session: a session's task holds only its own workers' answers
    by_task = {key: g for key, g in crowd.labels.groupby(["session", "task"])}
    tasks = []
    annotation_id = 1
    for task_id, (slots, data) in enumerate(units, start=1):
        session = data.get("session", "")
        parts = [by_task[(session, t)].assign(name=name) for name, t in slots.items() if (session, t) in by_task]
        answers = pd.concat(parts) if parts else pd.DataFrame(columns=[*crowd.labels.columns, "name"])
        annotations = []
        for worker, mine in answers.groupby("worker", sort=False):
            rejected = bool((mine["status"] == "Rejected").any())
            annotations.append(
                {
                    "id": annotation_id,
                    "completed_by": user_id[worker],
                    "was_cancelled": rejected,
                    "lead_time": float(mine["time_s"].sum()),
                    "created_at": "2024-01-01T10:00:00.000000Z",
                    "result": []
                    if rejected
                    else [
                        {
                            "id": f"r{annotation_id}.{i}",
                            "type": "choices",
                            "from_name": r.name,
                            "to_name": "image" if r.name == q.name else f"image_{r.name.rsplit('_', 1)[-1]}",
                            "origin": "manual",
                            "value": {"choices": [r.label]},
                        }
                        for i, r in enumerate(mine.itertuples())
                    ],
                }
            )
            annotation_id += 1
        tasks.append({"id": task_id, "data": data, "annotations": annotations, "predictions": []})
    buffer = io.StringIO()
    json.dump(tasks, buffer, indent=1)
    atomic_write_text(path, buffer.getvalue() + "\n")
