"""Editable texts for a crowd study: instructions, consent and a qualification note.

``publish --session-faces`` writes them into ``BATCH/texts/`` (they are public: the crowd reads them) and
puts the instructions and the consent statement into the MTurk template. A team replaces them with
its own (``--instructions FILE``, ``--consent FILE``, ``--qualification FILE``) after its ethics
board has approved the wording; ``{question}``, ``{choices}``, ``{n_images}`` and ``{minutes}`` are
filled in at publishing.
"""

from __future__ import annotations

import os
from pathlib import Path

TEXT_NAMES: tuple[str, ...] = ("instructions", "consent", "qualification")

DEFAULT_TEXTS: dict[str, str] = {
    "instructions": """\
You will see {n_images} face images. Some are photographs, some are computer-generated faces.
For each image, answer: {question} Choose one of: {choices}.

- Judge the expression you see, not what you guess the person felt.
- There is no time limit per image; most people take about {minutes} minutes in all.
- Every image needs an answer before you can submit.
- A few images have a known answer and check attention; careless work may be rejected.
""",
    "consent": """\
This task is part of a research study on labelling facial expressions. Taking part is voluntary and
you may stop at any time by returning the task. We record your answers, the time you took and your
worker ID (to pay you and to combine your answers); we do not record your name or your face. The
answers are kept by the research team and published only in aggregate. Contact: RESEARCH TEAM EMAIL.
By ticking the box you confirm that you are 18 or older and agree to take part.
""",
    "qualification": """\
Suggested worker requirements (MTurk: "Workers" tab of the project; Label Studio: invite only the
annotators who pass):

- HIT approval rate >= 95% and >= 500 approved HITs (MTurk system qualifications).
- A short practice round: the gold items of this batch (publish --gold) answered correctly at least
  75% of the time; workers below that are screened out by `report/aggregate --min-gold-accuracy 0.75`.
- One session per worker (MTurk: set "Maximum assignments per worker" by using one HIT per session and
  MaxAssignments = the number of workers wanted; Label Studio: overlap = the number of annotators).
""",
}


def load_texts(paths: dict[str, str | os.PathLike[str] | None], **fields: object) -> dict[str, str]:
    """The three texts (a team's files where given, else the defaults) with ``fields`` filled in."""
    out = {}
    for name in TEXT_NAMES:
        path = paths.get(name)
        try:
            text = Path(path).read_text(encoding="utf-8") if path else DEFAULT_TEXTS[name]
        except OSError as exc:
            raise ValueError(f"--{name} {path}: cannot read ({exc.strerror})") from exc
        for key, value in fields.items():
            text = text.replace("{" + key + "}", str(value))
        out[name] = text
    return out
