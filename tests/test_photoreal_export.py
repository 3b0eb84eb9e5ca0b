"""The photoreal method's Triton entry (issue 20, "Serving"): exported from the graph the embedded backend
compiles, listed and checked by the repository tools, served by the Python-backend variant.

Needs the portrait model files (``python3 dev.py install`` fetches them) and OpenVINO; skips without them.
The real Triton server serving the entry, through the service, is in tests/test_service_triton.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from surrogate.photoreal import photoreal_available

pytestmark = pytest.mark.skipif(not photoreal_available(), reason="the portraits extra or its model files are missing")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.photoreal import export_photoreal

    repo = tmp_path_factory.mktemp("photoreal") / "repository"
    export_photoreal(repo)
    return repo


def test_the_entry_is_the_embedded_graph_with_its_tensors_read_from_it(exported: Path) -> None:
    from export.photoreal import entry_config
    from export.triton import config_to_text
    from surrogate.model_repo import ModelRepository, config_io, openvino_io
    from surrogate.photoreal import PHOTOREAL_VERSION, SYNTHESIS_MODEL, synthesis_model

    model = synthesis_model()
    repository = ModelRepository(exported)
    config = repository.config(SYNTHESIS_MODEL)
    assert config.backend == "openvino" and config.default_model_filename == "model.xml"
    inputs, outputs = openvino_io(model)
    assert config_io(config) == (inputs, outputs)
    # the committed config is the one the exporter derives from today's graph: re-run the export when it changes
    committed = (ROOT / "model_repository" / SYNTHESIS_MODEL / "config.pbtxt").read_text()
    assert committed == config_to_text(entry_config(model)), "run: surrogate export photoreal"
    folder = exported / SYNTHESIS_MODEL / str(PHOTOREAL_VERSION)
    info = json.loads((folder / "export.json").read_text())
    assert info["bytes"]["model.bin"] == (folder / "model.bin").stat().st_size > 30e6  # float32 weights


def test_the_repository_lists_describes_and_checks_it_without_onnxruntime(exported: Path) -> None:
    from export.photoreal import export_photoreal
    from export.triton import check_repository
    from surrogate.model_repo import ModelRepository, ModelRepositoryError
    from surrogate.photoreal import LICENCE, PHOTOREAL_VERSION, SYNTHESIS_MODEL

    repository = ModelRepository(exported)
    assert repository.model_names() == [SYNTHESIS_MODEL]
    assert repository.versions(SYNTHESIS_MODEL) == [PHOTOREAL_VERSION]
    assert repository.model_format(SYNTHESIS_MODEL) == "openvino"
    assert repository.metadata(SYNTHESIS_MODEL)["licence"] == LICENCE
    assert "non-commercial" in repository.model_card(SYNTHESIS_MODEL)
    assert len(repository.schema(SYNTHESIS_MODEL)) == 10
    with pytest.raises(ModelRepositoryError, match="OpenVINO IR, not ONNX"):
        repository.session(SYNTHESIS_MODEL)
    assert check_repository(exported) == {SYNTHESIS_MODEL: []}
    export_photoreal(exported)  # the same graph again: nothing to do
    # a config that disagrees with the graph is reported, naming the tensor
    config = exported / SYNTHESIS_MODEL / "config.pbtxt"
    text = config.read_text()
    try:
        config.write_text(text.replace('name: "style"', 'name: "w"'))
        assert any("'w'" in p for p in check_repository(exported, run=False)[SYNTHESIS_MODEL])
    finally:
        config.write_text(text)


def test_the_python_backend_variant_runs_the_same_ir(exported: Path, tmp_path: Path) -> None:
    from export.triton import write_python_backend_repository
    from surrogate.photoreal import PHOTOREAL_VERSION, SYNTHESIS_MODEL

    out = write_python_backend_repository(exported, tmp_path / "python", extra_sys_path=["/opt/x"])
    version = out / SYNTHESIS_MODEL / str(PHOTOREAL_VERSION)
    assert sorted(p.name for p in version.iterdir()) == ["model.bin", "model.py", "model.xml", "model_settings.json"]
    assert (version / "model.py").read_text() == (ROOT / "export" / "triton_python_model.py").read_text()
    settings = json.loads((version / "model_settings.json").read_text())
    assert settings["model_file"] == "model.xml" and settings["extra_sys_path"] == ["/opt/x"]
    assert 'backend: "python"' in (out / SYNTHESIS_MODEL / "config.pbtxt").read_text()


def test_an_entry_whose_files_are_not_placed_is_named_and_left_out_of_the_python_variant(tmp_path: Path) -> None:
    import shutil

    from export.triton import check_repository, write_python_backend_repository
    from surrogate.photoreal import SYNTHESIS_MODEL

    repo = tmp_path / "repository"
    shutil.copytree(ROOT / "model_repository" / SYNTHESIS_MODEL, repo / SYNTHESIS_MODEL,
                    ignore=shutil.ignore_patterns("[0-9]*"))
    problems = check_repository(repo)[SYNTHESIS_MODEL]
    assert problems and "surrogate export photoreal" in problems[0]
    out = write_python_backend_repository(repo, tmp_path / "python")
    assert not (out / SYNTHESIS_MODEL).exists()


def test_the_graph_quantises_as_the_float_path_did() -> None:
    """The uint8 output of the graph vs the old float low band quantised in numpy: at most one level."""
    import openvino as ov

    from surrogate.photoreal import HalfResolutionGenerator, synthesis_model
    from surrogate.portraits import compile_cpu

    generator = HalfResolutionGenerator(batch=1)
    w = generator.w([5])
    portraits = generator.render(w)
    model = synthesis_model(batch=1)
    # the graph without its quantisation: the op before the low band's slice is the bands
    slice_op = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == "portrait/low")
    offset = np.zeros((1, generator.channels), np.float32)
    bands = compile_cpu(ov.Model([slice_op.input_value(0)], model.get_parameters()))({0: w, 1: offset})[0]
    floats = np.clip(np.rint((0.5 * bands[:, :3].transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255)
    difference = np.abs(floats - portraits)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-4, (difference > 0).sum()
