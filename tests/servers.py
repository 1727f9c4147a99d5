"""Real servers for tests: a FastAPI app under uvicorn in a thread, a redis-server process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from driftline.orchestration.processes import free_port


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """``app`` (lifespan already running) served by uvicorn on a free loopback port."""
    assert isinstance(app, FastAPI)
    port = free_port()
    # Keep-alive beyond uvicorn's 5 s: a test client's pooled connection idle for 5 s
    # (a wave of requests whose slowest answer takes that long on a loaded machine) is
    # closed by the server just as the next request goes out on it, and httpx does not
    # retry a POST (httpx.ReadError: make test, 2026-12-01).
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=300,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30.0
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port (no persistence), as its URL.

    Runs in ``folder`` (its log goes there); stopped (and waited for) on exit.

    Raises:
        FileNotFoundError: ``redis-server`` is not installed (``make redis-server``).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (make redis-server)")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    command += ["no", "--dir", str(folder), "--logfile", str(folder / "redis.log")]
    process = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30.0
        while True:
            assert process.poll() is None, f"redis-server exited: see {folder / 'redis.log'}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10.0)
