"""Test support: a real ``tritonserver`` (from the nvidia-pytriton wheel) on 127.0.0.1 free ports.

Used by the Triton tests (``tests/conftest.py``'s ``triton_served``) and ``benchmarks/bench_service.py``;
it serves a Python-backend repository (``surrogate export python-backend``), because the bundled
binary has no onnxruntime backend. Not part of the installed packages: the exporter writes
repositories, this file only starts a server on one for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from service.testing import free_port, http_ready

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class TritonInstallation:
    """The tritonserver binary and Python-backend stub inside a venv holding nvidia-pytriton."""

    venv: Path
    python_version: str
    package_dir: Path           # .../site-packages/pytriton/tritonserver
    site_packages: Path
    interpreter_lib_dir: Path   # where the venv interpreter's libpython lives

    @classmethod
    def find(cls, venv: str | os.PathLike[str]) -> TritonInstallation:
        venv = Path(venv)
        candidates = sorted(venv.glob("lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver"))
        if not candidates:
            raise FileNotFoundError(f"{venv}: no nvidia-pytriton tritonserver binary (run scripts/triton_env.sh)")
        package_dir = candidates[-1].parent.parent
        site_packages = package_dir.parent.parent
        python_version = site_packages.parent.name.removeprefix("python")
        python = (venv / "bin" / "python").resolve()
        interpreter_lib_dir = python.parent.parent / "lib"
        return cls(venv, python_version, package_dir, site_packages, interpreter_lib_dir)


class TritonServer:
    """A real ``tritonserver`` (from nvidia-pytriton) on 127.0.0.1, serving a Python-backend repository.

    Applies the two start-up fixes these machines need: the backend stub must load the venv
    interpreter's libpython (its lib dir first on LD_LIBRARY_PATH, else Debian's system libpython is
    picked and fails with "'_thread.RLock' object has no attribute '_recursion_count'"), and the stub
    for that Python version must be copied into the backend directory (the wheel keeps it aside).
    """

    def __init__(self, repository: str | os.PathLike[str], installation: TritonInstallation,
                 *, workdir: str | os.PathLike[str], log_verbose: int = 0) -> None:
        self.repository = Path(repository)
        self.installation = installation
        self.workdir = Path(workdir)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log_path = self.workdir / "tritonserver.log"
        self.log_verbose = log_verbose
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _prepare(self) -> Path:
        server_dir = self.workdir / "tritonserver"
        if not server_dir.exists():
            shutil.copytree(self.installation.package_dir, server_dir,
                            ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
            stub = self.installation.package_dir / "python_backend_stubs" / self.installation.python_version / \
                "triton_python_backend_stub"
            shutil.copy2(stub, server_dir / "backends" / "python" / "triton_python_backend_stub")
        return server_dir

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [str(self.installation.interpreter_lib_dir)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        libs.append(str(self.installation.site_packages / "nvidia_pytriton.libs"))
        env["LD_LIBRARY_PATH"] = ":".join(libs)
        env["PATH"] = f"{self.installation.venv / 'bin'}:{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(self.installation.site_packages)
        env.pop("PYTHONHOME", None)
        return env

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        server_dir = self._prepare()
        command = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={server_dir / 'backends'}",
            f"--cache-directory={server_dir / 'caches'}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--model-control-mode=none", "--strict-readiness=true", "--exit-on-error=true",
            "--exit-timeout-secs=5",
            f"--log-verbose={self.log_verbose}",
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.environment(),
                                        cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        return http_ready(f"http://{self.http_url}/v2/health/ready")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_triton_venv() -> Path:
    """``$SURROGATE_TRITON_VENV`` or ``.venv-triton`` at the project root."""
    env = os.environ.get("SURROGATE_TRITON_VENV")
    return Path(env) if env else ROOT / ".venv-triton"


def ensure_triton_venv(venv: Path | None = None, *, timeout_s: float = 600) -> TritonInstallation:
    """Find the Triton venv, creating it with scripts/triton_env.sh when it is missing."""
    venv = venv or default_triton_venv()
    try:
        return TritonInstallation.find(venv)
    except FileNotFoundError:
        script = ROOT / "scripts" / "triton_env.sh"
        try:
            result = subprocess.run(["bash", str(script), str(venv)], capture_output=True, text=True,
                                    timeout=timeout_s, env={**os.environ, "PYTHON": sys.executable})
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"creating the Triton venv {venv} took longer than {timeout_s:.0f} s") from exc
        if result.returncode != 0:
            raise RuntimeError(f"could not create the Triton venv {venv}:\n{result.stderr[-2000:]}") from None
        return TritonInstallation.find(venv)


@contextlib.contextmanager
def serving(repository: str | os.PathLike[str], workdir: str | os.PathLike[str], *, threads: int = 1,
            instances: int = 1, timeout_s: float = 180.0) -> Iterator[TritonServer]:
    """A started ``TritonServer`` on the Python-backend variant of ``repository`` (written under ``workdir``,
    ``threads`` per model instance: onnxruntime's, or OpenVINO's for an OpenVINO entry, 0 = all cores)."""
    from export.triton import write_python_backend_repository

    workdir = Path(workdir)
    installation = ensure_triton_venv()
    python_repository = write_python_backend_repository(
        repository, workdir / "triton_repository", extra_sys_path=[str(installation.site_packages)],
        intra_op_threads=threads, instance_count=instances)
    server = TritonServer(python_repository, installation, workdir=workdir / "triton")
    try:
        server.start(timeout_s=timeout_s)
        yield server
    finally:
        server.stop()
