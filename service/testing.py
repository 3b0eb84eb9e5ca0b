"""Start the real service (``bentoml serve``) on a free 127.0.0.1 port and wait until it is ready.

The tests and ``benchmarks/bench_service.py`` all need the same start-up: a free port, the process in
its own process group (BentoML forks a front end and a model worker, so the whole group is stopped),
a readiness poll of ``/readyz`` that gives up early when the process dies, the log's tail in the
error, and a clean shutdown. It is written once here, torch-free and without httpx (urllib only), so
that benchmarks can use it without importing the tests.

Several services start in parallel with ``running_services`` (each BentoML start-up takes seconds of
mostly idle waiting, so overlapping them keeps test set-up short).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "EXAMPLE_RECORD",
    "SERVICE_TARGET",
    "ServiceProcess",
    "ServiceStartError",
    "free_port",
    "http_ready",
    "running_service",
    "running_services",
]

ROOT = Path(__file__).resolve().parent.parent
# A valid record of the default schema (natural units), for requests in tests and benchmarks.
EXAMPLE_RECORD: dict[str, float] = {
    "yaw": 10.0, "pitch": -5.0, "roll": 2.0, "AU04": 0.0, "AU05": 1.0, "AU06": 2.0, "AU07": 0.5, "AU12": 3.0,
    "AU23": 0.0, "gender": 0.3,
}
SERVICE_TARGET = "service.service:SurrogateService"
READY_PATH = "/readyz"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceStartError(RuntimeError):
    """The service exited or did not become ready in time; the message carries its log's tail."""


def http_ready(url: str, timeout_s: float = 2.0) -> bool:
    """True when ``GET url`` answers 200 (connection refused, timeouts and other statuses are False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ServiceProcess:
    """One ``bentoml serve service.service:SurrogateService`` on 127.0.0.1.

    ``env`` is applied on top of this process's environment (SURROGATE_* configuration, BENTOML_HOME,
    TMPDIR, ...); ``BENTOML_DO_NOT_TRACK=true`` is always set. The log goes to ``log_path`` (a
    temporary file when not given).
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        repository: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        port: int | None = None,
        target: str = SERVICE_TARGET,
    ) -> None:
        self.env = {**os.environ, **(env or {}), "BENTOML_DO_NOT_TRACK": "true"}
        if repository is not None:
            self.env["SURROGATE_MODEL_REPOSITORY"] = str(Path(repository).resolve())
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="surrogate-serve-", suffix=".log")
            os.close(handle)
            log_path = name
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.target = target
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        """Launch the process and return at once (``wait_ready`` waits)."""
        if self.process is not None:
            raise RuntimeError(f"the service on {self.url} was started already")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "bentoml", "serve", self.target, "--host", "127.0.0.1",
                   "--port", str(self.port), "--working-dir", str(ROOT)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> str:
        """Poll /readyz until it answers 200; returns the base URL. Stops the service and raises
        ServiceStartError (with the log's tail) when it exits or is not ready within ``timeout_s``."""
        if self.process is None:
            raise RuntimeError("start() the service before waiting for it")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise ServiceStartError(f"the service exited with {self.process.returncode} before it was "
                                        f"ready (log {self.log_path}):\n{self.log_tail()}")
            if http_ready(self.url + READY_PATH):
                return self.url
            time.sleep(0.5)
        self.stop()
        raise ServiceStartError(f"the service on {self.url} was not ready after {timeout_s:.0f} s "
                                f"(log {self.log_path}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the whole process group (front end and worker), SIGKILL it if it lingers."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> str:
        self.start()
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_services(services: Sequence[ServiceProcess], timeout_s: float = 120.0) -> Iterator[list[str]]:
    """Start all ``services`` at once, wait until each is ready, yield their base URLs, stop them all."""
    with contextlib.ExitStack() as stack:
        for service in services:
            stack.callback(service.stop)
            service.start()
        yield [service.wait_ready(timeout_s) for service in services]


@contextlib.contextmanager
def running_service(
    env: Mapping[str, str] | None = None,
    repository: str | os.PathLike[str] | None = None,
    *,
    log_path: str | os.PathLike[str] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[str]:
    """``bentoml serve`` of the service with ``env`` (and ``repository`` as SURROGATE_MODEL_REPOSITORY)
    on a free 127.0.0.1 port; yields its base URL once /readyz answers 200."""
    with running_services([ServiceProcess(env, repository=repository, log_path=log_path)], timeout_s) as urls:
        yield urls[0]
