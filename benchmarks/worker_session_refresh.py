"""BentoML's front-end-to-worker client (``_bentoml_impl.client.proxy2.SessionManager``) under concurrent
calls: how many calls lose their connection, with BentoML's session refresh and with ``service.service``'s
``ONE_SESSION`` setting (issue 23: dropped calls between the front end and the model worker).

Run:  .venv/bin/python benchmarks/worker_session_refresh.py [--seconds 60] [--callers 6] [--keep-alive 5]
It starts a small uvicorn (h11) server on 127.0.0.1 in a child process (20 ms per call, a 30 kB answer,
as the worker's /generate does), then runs ``--callers`` concurrent callers for ``--seconds`` through one
SessionManager, twice: with BentoML's defaults (a new session every 100 calls or 300 s) and with
``ONE_SESSION``. A dropped connection is retried up to twice, as ``WorkerEngine._call`` does; the output
counts first attempts that dropped, by aiohttp error type, and calls slower than 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve(port: int, keep_alive_s: float) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(0.02)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 30000})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=keep_alive_s, http="h11")


async def callers(port: int, count: int, seconds: float, settings: dict[str, Any]) -> tuple[Counter, int]:
    import aiohttp
    from _bentoml_impl.client.proxy2 import SessionManager

    manager = SessionManager(f"http://127.0.0.1:{port}", timeout=20, headers={}, **settings)
    outcomes: Counter = Counter()
    slow = 0
    until = time.monotonic() + seconds

    async def caller(index: int) -> None:
        nonlocal slow
        while time.monotonic() < until:
            if index % 3 == 0:  # some callers pause, so pooled connections also sit idle for a while
                await asyncio.sleep((index % 7) * 0.9)
            start = time.monotonic()
            for attempt in range(3):
                try:
                    session = await manager.get_session()
                    response = await session.post("/generate", data=b"y" * 3000)
                    await response.read()
                    outcomes["ok" if attempt == 0 else "ok after a retry"] += 1
                    break
                except aiohttp.ClientConnectionError as exc:
                    outcomes[f"dropped ({type(exc).__name__})"] += 1
            else:
                outcomes["failed after 3 attempts"] += 1
            slow += time.monotonic() - start > 2

    await asyncio.gather(*(caller(i) for i in range(count)))
    await manager.close()
    return outcomes, slow


def main() -> int:
    from service.service import ONE_SESSION
    from service.testing import free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--callers", type=int, default=6)
    parser.add_argument("--keep-alive", type=float, default=5.0, help="the server's keep-alive timeout")
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port, args.keep_alive), daemon=True)
    server.start()
    try:
        time.sleep(2)
        for name, settings in (("BentoML's refresh", {}), ("ONE_SESSION", ONE_SESSION)):
            outcomes, slow = asyncio.run(callers(port, args.callers, args.seconds, settings))
            calls = outcomes["ok"] + outcomes["ok after a retry"] + outcomes["failed after 3 attempts"]
            print(f"{name:<18} {calls} calls, {dict(outcomes)}, {slow} slower than 2 s")
    finally:
        server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
