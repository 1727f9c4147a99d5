"""Children the demo, the benchmark and the tests start are owned: always stopped, checked.

Each test starts tiny real children (``python -m http.server``, ``sleep``) on free ports
and asserts that their whole process group is gone afterwards, however the owner ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from driftline.orchestration.processes import (
    ProcessStartError,
    ProcessTimeoutError,
    WrongServerError,
    child_process,
    free_port,
    group_alive,
    http_ok,
    identity_check,
    run_child,
    scoring_service,
    start_child,
)

PY = sys.executable
#: A shell that leaves a grandchild (``sleep``) in the group, then becomes an HTTP server.
SERVER_WITH_GRANDCHILD = 'sleep 300 & exec "$0" -m http.server "$1" --bind 127.0.0.1'


def http_server(port: int) -> list[str]:
    """``python -m http.server`` on ``port`` behind a shell that leaves a ``sleep`` behind."""
    return ["sh", "-c", SERVER_WITH_GRANDCHILD, PY, str(port)]


def wait_gone(pgid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def running(*argv: str) -> list[int]:
    """Pids of running (not zombie) processes whose command line is exactly ``argv``."""
    wanted = ("\0".join(argv) + "\0").encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "cmdline").read_bytes() != wanted:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def test_the_group_is_gone_after_a_normal_exit(tmp_path: Path) -> None:
    port = free_port()
    with child_process(
        http_server(port),
        ready=http_ok(f"http://127.0.0.1:{port}/"),
        timeout_s=30,
        port=port,
        log_path=tmp_path / "server.log",
    ) as child:
        assert group_alive(child.pgid)
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)  # a group of its own
    assert not group_alive(child.pgid)  # the http server and the sleep
    assert child.process.returncode is not None


def test_the_group_is_gone_after_an_exception(tmp_path: Path) -> None:
    port = free_port()
    with (
        pytest.raises(KeyError),
        child_process(
            http_server(port), ready=http_ok(f"http://127.0.0.1:{port}/"), timeout_s=30
        ) as child,
    ):
        raise KeyError("boom")
    assert not group_alive(child.pgid)


def test_a_child_that_exits_before_it_is_ready_is_a_clear_error(tmp_path: Path) -> None:
    command = [PY, "-c", "import sys; print('cannot start: no model'); sys.exit(3)"]
    log_path = tmp_path / "crash.log"
    with (
        pytest.raises(ProcessStartError, match="exited with code 3") as raised,
        child_process(command, ready=lambda: False, timeout_s=30, log_path=log_path),
    ):
        pytest.fail("never ready")
    assert "cannot start: no model" in str(raised.value)
    assert str(log_path) in str(raised.value)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_child_that_is_never_ready_is_stopped() -> None:
    sleeper = ("sleep", "301.25")  # a command line no other process has
    with (
        pytest.raises(ProcessStartError, match="sleeper was not ready within 1 s"),
        child_process(sleeper, ready=lambda: False, timeout_s=1, name="sleeper"),
    ):
        pytest.fail("never ready")
    assert not running(*sleeper)


@contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock


def test_a_taken_port_is_refused_before_the_start() -> None:
    port = free_port()
    with (
        listening(port),
        pytest.raises(ProcessStartError, match=f"port {port} .* in use"),
        child_process(http_server(port), ready=lambda: True, port=port),
    ):
        pytest.fail("started on a taken port")


def test_a_server_that_cannot_bind_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    command = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    # No pre-check: the child itself fails to bind (an orphan got there first).
    with (
        listening(port),
        pytest.raises(ProcessStartError, match="exited with code 1"),
        child_process(command, ready=lambda: False, log_path=tmp_path / "bind.log"),
    ):
        pytest.fail("bound a taken port")


class Ready(BaseHTTPRequestHandler):
    """Answers ``/ready`` with ``self.server.body`` (status ``self.server.status``)."""

    def do_GET(self) -> None:
        body = json.dumps(self.server.body).encode()  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def ready_server(body: dict[str, Any], status: int = 200) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    server.body, server.status = body, status  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ready"
    finally:
        server.shutdown()
        server.server_close()


def test_the_ready_check_rejects_a_server_with_another_instance_id() -> None:
    other = {"ready": True, "instance_id": "theirs", "pid": 4242, "home": "/elsewhere"}
    with ready_server(other) as url, pytest.raises(WrongServerError) as raised:
        identity_check(url, "mine")()
    message = str(raised.value)
    assert "'theirs'" in message and "4242" in message and "/elsewhere" in message
    with ready_server({"ready": True}) as url, pytest.raises(WrongServerError):
        identity_check(url, "mine")()  # no instance id at all: not ours either
    with ready_server({"ready": True, "instance_id": "mine"}) as url:
        assert identity_check(url, "mine")() is True
    with ready_server({"ready": False, "instance_id": "mine"}, status=503) as url:
        assert identity_check(url, "mine")() is False  # ours, not ready yet
    assert identity_check(f"http://127.0.0.1:{free_port()}/ready", "mine")() is False


#: A stand-in for ``driftline serve``: /ready with the instance id from the environment
#: (or a fixed wrong one with ``--wrong``).
FAKE_SERVE = textwrap.dedent(
    """
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    ident = "impostor" if "--wrong" in sys.argv else os.environ["DRIFTLINE_SERVE_INSTANCE_ID"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"ready": True, "instance_id": ident, "pid": os.getpid()})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def test_the_scoring_service_must_answer_with_its_own_instance_id(tmp_path: Path) -> None:
    port = free_port()
    command = [PY, "-c", FAKE_SERVE, str(port)]
    with scoring_service(
        port, log_path=tmp_path / "serve.log", command=command, timeout_s=30
    ) as child:
        assert child.instance_id
    assert not group_alive(child.pgid)

    port = free_port()
    impostor = [PY, "-c", FAKE_SERVE, str(port), "--wrong"]
    with (
        pytest.raises(WrongServerError, match="'impostor'"),
        scoring_service(port, log_path=tmp_path / "i.log", command=impostor, timeout_s=30),
    ):
        pytest.fail("accepted another server")


def test_run_child_stops_the_whole_group_on_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ProcessTimeoutError, match="did not finish within 1 s"):
        run_child(["sh", "-c", "sleep 300 & sleep 300"], timeout_s=1, log_path=tmp_path / "l")
    assert time.monotonic() - started < 30
    assert run_child([PY, "-c", "raise SystemExit(7)"], timeout_s=30) == 7


#: An owner process: starts a server with a grandchild, prints the group, waits.
OWNER = textwrap.dedent(
    """
    import sys, time
    from driftline.orchestration.processes import free_port, start_child

    port = free_port()
    shell = 'sleep 300 & exec "$0" -m http.server "$1" --bind 127.0.0.1'
    child = start_child(["sh", "-c", shell, sys.executable, str(port)])
    print(child.pgid, flush=True)
    time.sleep(300)
    """
)


def _owner_with_child() -> tuple[subprocess.Popen[str], int]:
    owner = subprocess.Popen(
        [PY, "-c", OWNER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert owner.stdout is not None
    pgid = int(owner.stdout.readline())
    assert group_alive(pgid)
    return owner, pgid


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signalled_owner_stops_its_children_first(signum: int) -> None:
    owner, pgid = _owner_with_child()
    try:
        owner.send_signal(signum)
        assert owner.wait(timeout=30) == 128 + signum
        assert wait_gone(pgid)
    finally:
        owner.kill()
        owner.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_owner_takes_its_child_with_it() -> None:
    owner, pgid = _owner_with_child()
    try:
        owner.kill()  # no handler runs: the kernel's parent-death signal stops the child
        owner.wait(timeout=30)
        deadline = time.monotonic() + 15
        while alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The direct child (the server, the group's leader) is gone; what it started
        # itself (here the shell's ``sleep``) is the server's to stop on SIGTERM, as
        # uvicorn and gunicorn do.
        assert not alive(pgid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def test_start_child_reports_a_missing_program() -> None:
    with pytest.raises(ProcessStartError, match="could not start"):
        start_child(["/nonexistent/driftline-serve"])
