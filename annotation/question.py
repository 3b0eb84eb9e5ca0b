"""The crowd question and its answer choices, and known-answer (gold) item rules.

One ``Question`` travels with a batch: publishing writes it into the Label Studio config and the
MTurk template, the importer uses it to decode answers (MTurk radio buttons arrive as
``Answer.<name>.option_<N>`` booleans, so the choice order matters) and to reject labels that are
not one of the choices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from surrogate.schema import AttributeSchema

_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Question:
    """What the crowd is asked about each face.

    ``name`` is the answer field: the Label Studio ``Choices`` name and the MTurk answer prefix, so it
    must be a plain identifier. ``choices`` are the labels exactly as they will come back.
    """

    name: str = "emotion"
    text: str = "Does this face show joy?"
    choices: tuple[str, ...] = ("joy", "not joy")

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(str(c) for c in self.choices))
        if not _NAME_PATTERN.match(self.name):
            raise ValueError(f"question name {self.name!r} must be an identifier (letters, digits, _)")
        if not self.text.strip():
            raise ValueError("question text is empty")
        if len(self.choices) < 2:
            raise ValueError(f"a question needs at least two choices, got {list(self.choices)}")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"duplicate choices: {list(self.choices)}")
        if any(not c.strip() for c in self.choices):
            raise ValueError(f"empty choice in {list(self.choices)}")

    def option_index(self, choice: str) -> int:
        return self.choices.index(choice)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "text": self.text, "choices": list(self.choices)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Question:
        try:
            return cls(name=str(data["name"]), text=str(data["text"]), choices=tuple(data["choices"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a question definition (needs name, text, choices): {exc}") from exc


@dataclass(frozen=True)
class GoldRule:
    """A known-answer item: attributes whose surrogate has an unambiguous answer.

    E.g. ``joy=AU12:5,AU06:4`` (a strong smile with cheek raise is joy) or ``not joy=AU12:0``.
    Every attribute not named is neutral (frontal pose, action units at 0, gender alternating),
    so a gold item carries no information about any private face.
    """

    label: str
    attributes: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> GoldRule:
        """Parse ``LABEL=NAME:VALUE,NAME:VALUE``."""
        label, sep, body = text.partition("=")
        if not sep or not label.strip():
            raise ValueError(f"gold rule {text!r}: expected LABEL=ATTRIBUTE:VALUE[,ATTRIBUTE:VALUE...]")
        attributes: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in body.split(","))):
            name, colon, value = part.partition(":")
            if not colon:
                raise ValueError(f"gold rule {text!r}: {part!r} is not ATTRIBUTE:VALUE")
            try:
                attributes[name.strip()] = float(value)
            except ValueError as exc:
                raise ValueError(f"gold rule {text!r}: {value!r} is not a number") from exc
        if not attributes:
            raise ValueError(f"gold rule {text!r} sets no attribute")
        return cls(label.strip(), attributes)

    def check(self, question: Question, schema: AttributeSchema) -> None:
        if self.label not in question.choices:
            raise ValueError(f"gold label {self.label!r} is not one of the choices {list(question.choices)}")
        for name, value in self.attributes.items():
            if name not in schema:
                raise ValueError(
                    f"gold rule for {self.label!r}: unknown attribute {name!r}; known: {list(schema.names)}"
                )
            reason = schema.spec(name).check(value)
            if reason:
                raise ValueError(f"gold rule for {self.label!r}: {name} {reason}")

    def values(self, schema: AttributeSchema, variant: int = 0) -> list[float]:
        """The full attribute row (schema order, natural units) of this rule's ``variant``-th item."""
        row = []
        for spec in schema.attributes:
            if spec.name in self.attributes:
                row.append(float(self.attributes[spec.name]))
            elif spec.name == "gender":
                row.append(0.25 if variant % 2 == 0 else 0.75)
            else:
                row.append(min(max(0.0, spec.low), spec.high))
        return row


def parse_gold_rules(texts: Sequence[str]) -> list[GoldRule]:
    return [GoldRule.parse(t) for t in texts]
