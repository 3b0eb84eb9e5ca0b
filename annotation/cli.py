"""``surrogate annotate``: crowd batches out, labels back, the paper's analyses.

The round trip::

    surrogate annotate publish faces.csv --batch crowd/ --mapping private/mapping.json --method 3d
    (post crowd/ to Label Studio or MTurk; download the results)
    surrogate annotate import results.csv --mapping private/mapping.json --out private/labels.csv
    surrogate annotate aggregate private/labels.csv --mapping private/mapping.json --out private/agg.csv
    surrogate annotate transfer private/agg.csv --mapping private/mapping.json --out private/face_labels.csv
    surrogate annotate report private/labels.csv --mapping private/mapping.json --out private/report/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

_MAPPING = click.option(
    "--mapping",
    "mapping_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The PRIVATE mapping written by 'publish' (token -> private id, method, seed).",
)


def _input_option(flag: str, dest: str, help: str, *, folder: bool = False) -> Any:
    """An optional existing input file (or folder)."""
    kind = click.Path(exists=True, file_okay=not folder, dir_okay=folder, path_type=Path)
    return click.option(flag, dest, type=kind, help=help)


def _text_option(name: str, help: str) -> Any:
    """``--<name> FILE``: an editable study text (annotation.texts), passed as ``<name>_path``."""
    return _input_option(f"--{name}", f"{name}_path", help)


def _folder_option(flag: str, dest: str, help: str) -> Any:
    """A required output folder option."""
    return click.option(flag, dest, required=True, type=click.Path(file_okay=False, path_type=Path), help=help)


def _load_mapping(path: Path) -> Any:
    from annotation.mapping import MappingError, PrivateMapping

    try:
        return PrivateMapping.read(path)
    except MappingError as exc:
        raise click.ClickException(str(exc)) from exc


def _read_labels(path: Path) -> Any:
    from annotation.platforms import LabelFileError, read_tidy_labels

    try:
        return read_tidy_labels(path)
    except LabelFileError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(name="annotate", context_settings={"help_option_names": ["-h", "--help"]})
def annotate_group() -> None:
    """Crowd batches out, labels back, the paper's analyses.

    publish -> (crowd platform) -> import -> aggregate -> transfer, and report / simulate.
    Everything that links a crowd task to a private face stays in the private --mapping file.
    """


@annotate_group.command(name="publish")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_folder_option("--batch", "batch_dir", "Crowd batch folder to create (images + platform files; nothing private).")
@click.option(
    "--mapping",
    "mapping_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the PRIVATE mapping (must be outside the batch folder).",
)
@click.option(
    "--format",
    "manifest_format",
    default="auto",
    show_default=True,
    help="Manifest format: auto, canonical, openface, pyfeat, libreface, json.",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(["3d", "gan", "photoreal"]),
    help="Surrogate method(s); repeat for several. Default: 3d.",
)
@click.option(
    "--include-raw",
    is_flag=True,
    help="Also post the RAW photos (re-encoded, metadata stripped). Only for a consenting pilot.",
)
@click.option(
    "--image-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that relative 'file' paths of the manifest are relative to (default: its folder).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Batch seed: the faces get seeds SEED.. in a secret order (recorded in the mapping).",
)
@click.option("--size", default=128, show_default=True, type=int, help="Surrogate image size in pixels.")
@click.option(
    "--url-prefix",
    default="images/",
    show_default=True,
    help="Where the crowd will load images from: URL_PREFIX/<token>.png. MTurk files are written only for "
    "an https:// prefix (e.g. https://host/batch/images/); a relative one suits Label Studio local files.",
)
@click.option("--question-name", default="emotion", show_default=True, help="Answer field name (identifier).")
@click.option("--question", "question_text", default="Does this face show joy?", show_default=True)
@click.option(
    "--choice", "choices", multiple=True, help="An answer choice; repeat. Default: 'joy', 'not joy'."
)
@click.option(
    "--gold",
    "gold_rules",
    multiple=True,
    metavar="LABEL=ATTR:VALUE,...",
    help="Known-answer item rule, e.g. 'joy=AU12:5,AU06:4' or 'not joy=AU12:0'; repeatable.",
)
@click.option(
    "--gold-per-rule",
    default=2,
    show_default=True,
    type=click.IntRange(min=0),
    help="Gold items per rule and method.",
)
@click.option(
    "--gold-method",
    "gold_methods",
    multiple=True,
    type=click.Choice(["3d", "gan", "photoreal"]),
    help="Render gold items only by these methods (default: every --method); e.g. 3d where the GAN's "
    "gold faces look alike.",
)
@click.option(
    "--no-shuffle",
    is_flag=True,
    help="Publish tasks in manifest order (reveals it to the crowd; default: a secret random order).",
)
@click.option(
    "--min-confidence",
    default=0.75,
    show_default=True,
    type=float,
    help="Manifest rows below this detector confidence are rejected (OpenFace etc.).",
)
@click.option(
    "--session-faces",
    type=click.IntRange(min=1),
    help="The paper's design: one task/HIT per session of at most this many faces, each shown in every "
    "version (with the gold items), for one worker to label in one sitting. Default: one task per image.",
)
@_text_option("instructions", "Session instructions (Markdown/text) instead of the default; see texts/ in the batch.")
@_text_option("consent", "Consent statement for sessions instead of the default (have your ethics board approve it).")
@_text_option("qualification", "Worker-qualification notes for sessions instead of the default.")
@click.option(
    "--subject-column",
    metavar="COLUMN",
    help="A manifest column of private subject ids (CSV): every photo of one subject gets one seed and the "
    "subject's median gender, so one surrogate person (method photoreal keeps the person across attributes).",
)
@click.option("--overwrite", is_flag=True, help="Replace a previous batch in --batch / an existing mapping.")
def publish_command(
    manifest: Path,
    batch_dir: Path,
    mapping_path: Path,
    manifest_format: str,
    methods: tuple[str, ...],
    include_raw: bool,
    image_root: Path | None,
    seed: int,
    size: int,
    url_prefix: str,
    question_name: str,
    question_text: str,
    choices: tuple[str, ...],
    gold_rules: tuple[str, ...],
    gold_per_rule: int,
    gold_methods: tuple[str, ...],
    no_shuffle: bool,
    min_confidence: float,
    session_faces: int | None,
    instructions_path: Path | None,
    consent_path: Path | None,
    qualification_path: Path | None,
    subject_column: str | None,
    overwrite: bool,
) -> None:
    """Write a crowd batch of surrogates for the faces in MANIFEST (any attribute adapter format).

    The batch folder is what you post to Label Studio or MTurk; the private mapping stays with you.
    """
    from annotation.batch import load_manifest, publish_batch
    from annotation.question import Question, parse_gold_rules
    from surrogate.synthesis_cli import read_column

    try:
        question = Question(name=question_name, text=question_text, choices=choices or ("joy", "not joy"))
        rules = parse_gold_rules(gold_rules)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        table = load_manifest(manifest, format=manifest_format, min_confidence=min_confidence)
    except ValueError as exc:  # AttributeFileError, AttributeValidationError
        raise click.ClickException(str(exc)) from exc
    try:
        subjects = (None if subject_column is None
                    else read_column(manifest, subject_column, table.rows or list(range(1, len(table.ids) + 1))))
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for rejected in table.rejected[:10]:
        click.echo(f"manifest row {rejected.row} ({rejected.id}) skipped: {rejected.reason}", err=True)
    if len(table.rejected) > 10:
        click.echo(f"... and {len(table.rejected) - 10} more rejected manifest rows", err=True)
    try:
        summary = publish_batch(
            table,
            batch_dir,
            mapping_path,
            question=question,
            methods=methods or (() if include_raw else ("3d",)),
            include_raw=include_raw,
            image_root=image_root or manifest.parent,
            seed=seed,
            size=size,
            url_prefix=url_prefix,
            gold_rules=rules,
            gold_per_rule=gold_per_rule,
            gold_methods=gold_methods or None,
            shuffle=not no_shuffle,
            overwrite=overwrite,
            session_faces=session_faces,
            texts={"instructions": instructions_path, "consent": consent_path, "qualification": qualification_path},
            subjects=subjects,
        )
    except ValueError as exc:  # PublishError, MappingError, attribute validation
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"batch {summary.batch_dir}: {summary.n_tasks} tasks ({summary.n_items} items of "
        f"{summary.n_private} faces by {', '.join(summary.methods)}; {summary.n_gold} gold)"
        + (f" in {summary.n_sessions} session(s), one task/HIT each" if summary.n_sessions else "")
    )
    click.echo(f"private mapping: {summary.mapping_path}  (keep it private; never upload it)")
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)


def _renamed(command: click.Command, old_name: str) -> click.Command:
    """``old_name`` as a hidden alias of ``command`` that says, in one line on stderr, to use the new name."""

    def callback(**kwargs: Any) -> Any:
        click.echo(f"note: 'surrogate annotate {old_name}' is now 'surrogate annotate {command.name}' "
                   "(same options); the old name is deprecated.", err=True)
        return click.get_current_context().invoke(command, **kwargs)

    return click.Command(old_name, params=command.params, callback=callback, help=command.help, hidden=True)


# 'publish' was called 'export', which also names ONNX export (`surrogate export`); old scripts keep working.
annotate_group.add_command(_renamed(publish_command, "export"))


@annotate_group.command(name="import")
@click.argument(
    "results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@_MAPPING
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tidy labels CSV to write: worker, task, label, time_s, assignment.",
)
@click.option(
    "--platform",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "labelstudio-json", "labelstudio-csv", "mturk"]),
)
@click.option(
    "--problems",
    "problems_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every left-out row (rejected, empty, unknown task, duplicate) to this CSV.",
)
def import_command(
    results: tuple[Path, ...], mapping_path: Path, out_path: Path, platform: str, problems_path: Path | None
) -> None:
    """Read platform RESULTS files (Label Studio JSON/CSV export, MTurk batch results) into tidy labels."""
    import pandas as pd

    from annotation.platforms import LabelFileError, RowProblem, read_labels, write_labels
    from surrogate.imageio import atomic_write_text

    mapping = _load_mapping(mapping_path)
    frames, problems = [], []
    for path in results:
        try:
            result = read_labels(path, mapping.question, platform=platform, known_tasks=mapping.tokens)
        except LabelFileError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(result.summary())
        frames.append(result.labels)
        problems += [(str(path), p) for p in result.problems]
    labels = pd.concat(frames, ignore_index=True)
    across = labels.duplicated(subset=["worker", "task"], keep="first")
    if len(results) > 1 and across.any():
        for r in labels[across].itertuples():
            problems.append(
                ("(across files)", RowProblem("-", "duplicate assignment in another file", r.task, r.worker))
            )
        labels = labels[~across]
        click.echo(f"left out {int(across.sum())} duplicate (worker, task) pair(s) across files")
    write_labels(labels, out_path)
    click.echo(f"wrote {len(labels)} labels to {out_path}")
    if problems_path is not None:
        table = pd.DataFrame(
            [(f, p.row, p.worker, p.task, p.reason) for f, p in problems],
            columns=["file", "row", "worker", "task", "reason"],
        )
        atomic_write_text(problems_path, table.to_csv(index=False))
        click.echo(f"wrote {len(table)} left-out rows to {problems_path}")


@annotate_group.command(name="aggregate")
@click.argument("labels_path", metavar="LABELS", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_MAPPING
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--method",
    default="ds",
    show_default=True,
    type=click.Choice(["mv", "ds"]),
    help="crowd-kit aggregator: mv = MajorityVote, ds = DawidSkene.",
)
@click.option(
    "--min-gold-accuracy",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Drop workers whose accuracy on gold items is below this before aggregating.",
)
@click.option(
    "--per-face",
    "per_face_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write ONE label per private face combining all its surrogate versions (PRIVATE: ids).",
)
def aggregate_command(
    labels_path: Path,
    mapping_path: Path,
    out_path: Path,
    method: str,
    min_gold_accuracy: float,
    per_face_path: Path | None,
) -> None:
    """Aggregate tidy LABELS per task (crowd-kit), with agreement, ties and confidence."""
    from annotation.aggregate import (
        AggregationError,
        aggregate,
        face_labels,
        item_labels,
        screen_workers,
        write_csv,
    )

    mapping = _load_mapping(mapping_path)
    labels = _read_labels(labels_path)
    screen = screen_workers(labels, mapping, min_gold_accuracy)
    if screen.failed:
        click.echo(
            f"screened out {len(screen.failed)} worker(s) below {min_gold_accuracy:g} gold accuracy: "
            + ", ".join(screen.failed[:10])
        )
    kept = item_labels(labels, mapping, exclude_workers=screen.failed)
    try:
        result = aggregate(kept, method)
        faces = face_labels(kept, mapping, method=method) if per_face_path is not None else None
    except AggregationError as exc:
        raise click.ClickException(str(exc)) from exc
    write_csv(result, out_path)
    if faces is not None and per_face_path is not None:
        write_csv(faces, per_face_path)
        click.echo(f"wrote {len(faces)} per-face labels combining {faces['versions'].iloc[0]} to {per_face_path}")
    click.echo(
        f"aggregated {len(result)} tasks ({method}); {int(result['tie'].sum())} tied; wrote {out_path}"
    )


@annotate_group.command(name="transfer")
@click.argument("aggregated", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_MAPPING
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV: private_id, method, label, agreement, n_labels, tie, confidence.",
)
def transfer_command(aggregated: Path, mapping_path: Path, out_path: Path) -> None:
    """Carry AGGREGATED per-task labels back to the private ids through the mapping."""
    import pandas as pd

    from annotation.aggregate import AGGREGATE_COLUMNS, transfer, write_csv

    mapping = _load_mapping(mapping_path)
    frame = pd.read_csv(aggregated, dtype={"task": str, "label": str}, keep_default_na=False)
    missing = [c for c in AGGREGATE_COLUMNS if c not in frame.columns]
    if missing:
        raise click.ClickException(
            f"{aggregated}: lacks column(s) {missing}; write it with 'surrogate annotate aggregate'"
        )
    frame["tie"] = frame["tie"].astype(str).str.lower().eq("true")
    unknown = sorted(set(frame["task"]) - set(mapping.tokens))
    if unknown:
        raise click.ClickException(
            f"{aggregated}: {len(unknown)} task(s) not in the mapping, e.g. {unknown[0]} "
            "(labels of another batch?)"
        )
    result = transfer(frame, mapping)
    write_csv(result, out_path)
    unlabelled = int((result["n_labels"] == 0).sum())
    click.echo(
        f"wrote {len(result)} private labels to {out_path}"
        + (f" ({unlabelled} without any label)" if unlabelled else "")
    )


@annotate_group.command(name="report")
@click.argument("labels_path", metavar="LABELS", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_MAPPING
@_folder_option("--out", "out_dir", "Folder for report.md, report.json and the PNG figures.")
@_input_option("--truth", "truth_path", "CSV private_id,label of ground truth (default: the raw photos' majority).")
@click.option(
    "--covariate",
    help="Attribute to bin accuracy by (Figures 7-8), e.g. AU12; or the column of --covariates.",
)
@_input_option("--covariates", "covariates_path", "CSV private_id,<column> of an external score (emotion evidence).")
@click.option("--bins", default=6, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    type=click.FloatRange(0, 1),
    help="Consensus thresholds for Table 1; repeatable. Default 0.5 0.75 0.9.",
)
@click.option(
    "--repeats",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Draws per n for the majority-vote-over-n curve (Figure 6).",
)
@click.option("--unambiguous", type=float, help="Also report accuracy on faces with |covariate| >= this.")
@click.option("--min-gold-accuracy", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--title", default="Crowd labelling report", show_default=True)
@_input_option(
    "--batch", "batch_dir", "The crowd batch: adds Figures 9-10 (worst surrogates beside photos; PRIVATE).", folder=True
)
@_input_option(
    "--image-root", "image_root", "Folder the mapping's relative photo paths start from (raw photos).", folder=True
)
def report_command(
    labels_path: Path,
    mapping_path: Path,
    out_dir: Path,
    truth_path: Path | None,
    covariate: str | None,
    covariates_path: Path | None,
    bins: int,
    thresholds: tuple[float, ...],
    repeats: int,
    unambiguous: float | None,
    min_gold_accuracy: float,
    seed: int,
    title: str,
    batch_dir: Path | None,
    image_root: Path | None,
) -> None:
    """The paper's analyses (Table 1, Figures 5-10, paired t-tests) for every version in the batch."""
    import pandas as pd

    from annotation.report import (
        DEFAULT_THRESHOLDS,
        ReportError,
        ReportOptions,
        analyse,
        batch_images,
        write_report,
    )

    mapping = _load_mapping(mapping_path)
    labels = _read_labels(labels_path)
    truth = None
    if truth_path is not None:
        frame = pd.read_csv(truth_path, dtype=str, keep_default_na=False)
        if not {"private_id", "label"} <= set(frame.columns):
            raise click.ClickException(f"{truth_path}: needs columns private_id,label")
        truth = dict(zip(frame["private_id"], frame["label"], strict=True))
    covariate_values = None
    if covariates_path is not None:
        frame = pd.read_csv(covariates_path, dtype={"private_id": str})
        if covariate is None or covariate not in frame.columns or "private_id" not in frame.columns:
            raise click.ClickException(
                f"{covariates_path}: needs a private_id column and the --covariate column "
                f"({covariate!r}); columns: {list(frame.columns)}"
            )
        covariate_values = dict(
            zip(frame["private_id"], pd.to_numeric(frame[covariate], errors="coerce"), strict=True)
        )
    options = ReportOptions(
        thresholds=thresholds or DEFAULT_THRESHOLDS,
        repeats=repeats,
        seed=seed,
        covariate=covariate,
        covariate_values=covariate_values,
        bins=bins,
        unambiguous=unambiguous,
        min_gold_accuracy=min_gold_accuracy,
        title=title,
    )
    try:
        analysis = analyse(labels, mapping, truth=truth, options=options)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    images = batch_images(mapping, batch_dir, image_root) if batch_dir or image_root else None
    paths = write_report(analysis, out_dir, title=title, images=images)
    for version, row in analysis.table.items():
        click.echo(
            f"{version:>4}: individual accuracy {100 * row['avg_accuracy']:.1f}%, majority vote "
            f"{100 * row['mv_accuracy']:.1f}%, Dawid-Skene {100 * row['ds_accuracy']:.1f}% "
            f"({row['n_faces']} faces, {row['n_labels']} labels)"
        )
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


def _parse_accuracy(values: tuple[str, ...]) -> dict[str, float]:
    out = {"raw": 0.92, "gan": 0.8, "3d": 0.78}
    for text in values:
        version, sep, number = text.partition("=")
        try:
            out[version.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(
                f"{text!r}: expected VERSION=ACCURACY, e.g. gan=0.8", param_hint="--accuracy"
            )
    return out


@annotate_group.command(name="simulate")
@_MAPPING
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results file to write, in the platform's own format.",
)
@click.option(
    "--platform", default="mturk", show_default=True, type=click.Choice(["mturk", "labelstudio-json"])
)
@click.option(
    "--truth-attribute",
    default="AU12",
    show_default=True,
    help="Attribute that decides the true label: first choice when >= --truth-threshold.",
)
@click.option("--truth-threshold", default=2.0, show_default=True, type=float)
@click.option(
    "--difficulty-scale",
    default=1.0,
    show_default=True,
    type=float,
    help="Faces within about this distance of the threshold are hard (0 disables difficulty).",
)
@click.option(
    "--accuracy",
    "accuracies",
    multiple=True,
    metavar="VERSION=P",
    help="Accuracy of a typical labeller on easy faces per version; default raw=0.92 gan=0.8 3d=0.78.",
)
@click.option("--workers", default=30, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--labels-per-task", type=click.IntRange(min=1), help="Default: every worker labels every task."
)
@click.option(
    "--spammers", default=0.0, show_default=True, type=click.FloatRange(0, 0.99), help="Fraction of spammers."
)
@click.option(
    "--spammer-mode", default="random", show_default=True, type=click.Choice(["random", "constant"])
)
@click.option(
    "--rejected",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 0.99),
    help="Fraction of assignments marked Rejected (excluded again on import).",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def simulate_command(
    mapping_path: Path,
    out_path: Path,
    platform: str,
    truth_attribute: str,
    truth_threshold: float,
    difficulty_scale: float,
    accuracies: tuple[str, ...],
    workers: int,
    labels_per_task: int | None,
    spammers: float,
    spammer_mode: str,
    rejected: float,
    seed: int,
) -> None:
    """Answer a batch with a simulated crowd (for testing the round trip and the report)."""
    from annotation.simulate import (
        CrowdConfig,
        difficulty_from_attribute,
        simulate_crowd,
        truth_from_attribute,
        write_labelstudio_export,
        write_mturk_results,
    )

    mapping = _load_mapping(mapping_path)
    config = CrowdConfig(
        accuracy=_parse_accuracy(accuracies),
        n_workers=workers,
        labels_per_task=labels_per_task,
        spammer_fraction=spammers,
        spammer_mode=spammer_mode,
        rejected_fraction=rejected,
        seed=seed,
    )
    try:
        truth = truth_from_attribute(mapping, truth_attribute, truth_threshold)
        difficulty = (
            difficulty_from_attribute(mapping, truth_attribute, truth_threshold, difficulty_scale)
            if difficulty_scale > 0
            else None
        )
        crowd = simulate_crowd(mapping, truth, config, difficulty)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    (write_mturk_results if platform == "mturk" else write_labelstudio_export)(crowd, mapping, out_path)
    click.echo(f"wrote {len(crowd.labels)} simulated answers by {workers} workers to {out_path} ({platform})")
    for version, p in crowd.expected_accuracy.items():
        click.echo(f"  simulated individual accuracy {version}: {100 * p:.1f}%")


@annotate_group.command(name="study")
@_folder_option("--out", "out_dir", "Folder for private/ (photos, mapping, labels, report) and crowd/ (the batch).")
@click.option("--faces", default=60, show_default=True, type=click.IntRange(min=4))
@click.option("--workers", default=60, show_default=True, type=click.IntRange(min=3))
@click.option("--emotion", default="joy", show_default=True, type=click.Choice(["joy", "anger"]))
@click.option("--size", default=128, show_default=True, type=click.IntRange(16, 512))
@click.option("--repeats", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--spammers", default=0.05, show_default=True, type=click.FloatRange(0, 0.5))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def study_command(
    out_dir: Path, faces: int, workers: int, emotion: str, size: int, repeats: int, spammers: float, seed: int
) -> None:
    """A simulated run of the paper's study: FACES x raw/GAN/3-D x WORKERS in sessions, end to end.

    Synthetic "private" photos, attributes and emotion evidence read by the shipped recon network,
    a published session batch, a simulated crowd in MTurk's results format, import, per-face labels and the
    report (Table 1, t-tests, Figures 5-10) in OUT/private/report/.
    """
    from annotation.report import _pct
    from annotation.study import run_study

    result = run_study(
        out_dir,
        faces=faces,
        workers=workers,
        seed=seed,
        size=size,
        repeats=repeats,
        spammers=spammers,
        emotion=emotion,
    )
    for step, seconds in result.timings.items():
        click.echo(f"{step:<32} {seconds:7.2f} s")
    click.echo(f"{'total':<32} {sum(result.timings.values()):7.2f} s")
    click.echo(
        f"evidence: {result.evidence_source}; r = {result.evidence_r:.3f} against the photos' true AUs "
        f"({4 * faces} candidates)"
    )
    for version, row in result.table.items():
        votes = ", ".join(
            f">= {float(t) * 100:g}%: {_pct(c['accuracy'])} ({c['n_faces']})" for t, c in row["vote"].items()
        )
        click.echo(
            f"{version:>4}: Avg {100 * row['avg_accuracy']:.1f}%  Vote {votes}  DS {100 * row['ds_accuracy']:.1f}%"
        )
    click.echo(f"report: {result.out / 'private' / 'report' / 'report.md'}")


@annotate_group.command(name="joint")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
def joint_command(reports: tuple[Path, ...], out_path: Path) -> None:
    """One Table 1 for several labelling tasks (e.g. joy and anger): REPORTS are their report.json files."""
    from annotation.report import ReportError, joint_table
    from surrogate.imageio import atomic_write_text

    try:
        text = joint_table(reports)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    atomic_write_text(out_path, text)
    click.echo(text)
