"""Fixtures shared by several test files.

``triton_served``: the real ``tritonserver`` (nvidia-pytriton, Python backend) on 127.0.0.1 free ports,
serving the Python-backend variant of a model repository that holds freshly initialised, really
exported networks (two ``gan_generator`` versions with different weights, one ``recon``; and, where the
photoreal method is installed, its synthesis network ``portrait_synthesis`` as OpenVINO IR). Session
scoped: test_triton_server.py and test_service_triton.py share one server start. torch, onnxscript
and tritonclient are imported inside the fixture so that collecting other tests stays light; the
tests using it skip when those, or the Triton venv (no network to create it), are missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

GENERATOR_SIZE = 16  # image side of the exported test generator and reconstruction network


class TritonModels(NamedTuple):
    server: Any  # triton_harness.TritonServer (started)
    repository: Any  # surrogate.model_repo.ModelRepository of the exported (onnxruntime) repository


@pytest.fixture(scope="session")
def triton_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonModels]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    pytest.importorskip("tritonclient.http")
    pytest.importorskip("tritonclient.grpc")
    from triton_harness import TritonServer, ensure_triton_venv

    from export.onnx_export import export_generator, export_reconnet
    from export.triton import (
        ModelCardInfo,
        ModelVersion,
        ServingOptions,
        add_version,
        write_python_backend_repository,
    )
    from surrogate.model_repo import ModelRepository
    from surrogate.schema import DEFAULT_SCHEMA
    from training.gan.config import ModelConfig as GanModelConfig
    from training.gan.networks import Generator
    from training.recon.networks import ReconNet

    try:
        installation = ensure_triton_venv()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"Triton venv (nvidia-pytriton) could not be created, no network? {exc}")

    def add(repo: Any, exported: Any, name: str) -> None:
        add_version(repo, ModelVersion(name, exported.to_bytes(), exported.schema, exported.facts,
                                       {"parity": exported.parity.to_dict()}, ModelCardInfo(kind=exported.kind)),
                    ServingOptions(max_batch_size=64, preferred_batch_sizes=(8, 32), max_queue_delay_us=1000))

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("triton")
    repo = root / "model_repository"
    torch.manual_seed(0)
    generators = [Generator(GanModelConfig(image_size=GENERATOR_SIZE, n=8), len(DEFAULT_SCHEMA)) for _ in range(2)]
    for generator in generators:  # two versions with different weights
        add(repo, export_generator(generator, DEFAULT_SCHEMA, batch_sizes=(2,)), "gan_generator")
    net = ReconNet(len(DEFAULT_SCHEMA), 12, image_size=GENERATOR_SIZE, width=0.25, head_features=32).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, 0.0, 0.1)
    add(repo, export_reconnet(net, DEFAULT_SCHEMA, image_size=GENERATOR_SIZE, channels=1, batch_sizes=(2,),
                              exporter="legacy"), "recon")
    from surrogate.photoreal import photoreal_available

    # the entry's model.py needs openvino in the Triton venv (scripts/triton_env.sh installs it); without it the
    # entry is left out and the photoreal Triton tests skip, rather than the server failing to start
    if photoreal_available() and any(installation.site_packages.glob("openvino/__init__.py")):
        from export.photoreal import export_photoreal

        export_photoreal(repo)
    python_repo = write_python_backend_repository(repo, root / "python_repository",
                                                  extra_sys_path=[str(installation.site_packages)])
    server = TritonServer(python_repo, installation, workdir=root / "work")
    server.start(timeout_s=180)
    try:
        yield TritonModels(server, ModelRepository(repo))
    finally:
        server.stop()
