"""Child processes this process owns: started in their own group, always stopped.

The demo, the benchmark and the tests start servers (``driftline serve``,
``mlflow models serve``) and long jobs (the demo itself). Each child is started by
:func:`start_child` in a session of its own, so its whole process group (uvicorn, its
workers, a ``taskset`` wrapper's target) can be signalled at once, and it is stopped --
SIGTERM to the group, SIGKILL after a grace period -- however the owner ends:

* leaving the ``with`` block of the :class:`Child` (normally or by an exception,
  ``KeyboardInterrupt`` included: a child in its own session does not get the terminal's
  Ctrl-C, its owner stops it);
* SIGTERM or SIGHUP to the owner (handlers installed on the first start, in the main
  thread; they stop every live child, then defer to the previous handler or exit with
  ``128 + signal``);
* interpreter exit (``atexit``);
* the owner dying without any of those (SIGKILL, a crash): on Linux the child asks the
  kernel for SIGTERM when the thread that started it ends (``PR_SET_PDEATHSIG``).

Starting a server is checked, not hoped for: :func:`ensure_port_free` refuses a port
something already listens on, :meth:`Child.wait_ready` fails with the child's exit code
and the end of its log when it exits before it is ready, and :func:`identity_check`
rejects a ``/ready`` answer from a server with another instance id -- an orphan of an
earlier run on the same port, serving another state folder.

Nothing here imports more than the standard library; :func:`scoring_service` (the
``driftline serve`` child with its instance id) imports the serving constants lazily.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL when stopping a group.
GRACE_S = 10.0

#: A readiness check: True when ready, False when not yet; raises to give up at once.
ReadyCheck = Callable[[], bool]


class ProcessStartError(RuntimeError):
    """A child could not be started or did not become ready (the message says why)."""


class WrongServerError(ProcessStartError):
    """The server answering on the child's port is not the child."""


class ProcessTimeoutError(RuntimeError):
    """A child did not finish in time (its process group has been stopped)."""


# --------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now (``SO_REUSEADDR``, as uvicorn does).

    A listening socket on the port (or on the wildcard address) makes it taken; a
    connection of an earlier run in ``TIME_WAIT`` does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def ensure_port_free(port: int, host: str = "127.0.0.1", *, hint: str = "") -> None:
    """Raise :class:`ProcessStartError` when something already listens on ``host:port``."""
    if not port_is_free(port, host):
        raise ProcessStartError(
            f"port {port} on {host} is already in use (an earlier server still running? "
            f"`ss -ltnp 'sport = :{port}'` shows which process): stop it or choose another "
            f"port{hint and '; ' + hint}"
        )


# --------------------------------------------------------------------------------------
# Process groups
# --------------------------------------------------------------------------------------


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _wait_group_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux for SIGTERM when the starting thread ends.

    The libc function is looked up here, in the parent, so the forked child only calls
    it (nothing to import or lock between fork and exec).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Child:
    """One child process, leader of its own process group; a context manager.

    Leaving the ``with`` block stops the whole group (see :meth:`stop`).
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        process: subprocess.Popen[bytes],
        log_path: Path | None,
    ) -> None:
        """Wrap a started ``process`` (use :func:`start_child`)."""
        self.name = name
        self.command = list(command)
        self.process = process
        self.pid = process.pid
        self.pgid = process.pid  # start_new_session: the child leads its group
        self.log_path = log_path
        self.started_at = time.monotonic()
        self.stopped = False
        #: The server's instance id, when it was given one (see :func:`scoring_service`).
        self.instance_id: str | None = None

    def __enter__(self) -> Child:
        """The child itself."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the group, whatever ended the block."""
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the child's output (empty without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _with_log(self, message: str) -> str:
        if self.log_path is None:
            return message
        tail = self.log_tail()
        return f"{message}; log {self.log_path}" + (f", last lines:\n{tail}" if tail else "")

    def wait_ready(
        self, check: ReadyCheck | None, timeout_s: float, *, poll_s: float = 0.25
    ) -> float:
        """Poll ``check`` until it returns True; the seconds since the start.

        Raises:
            ProcessStartError: The child exited first (with its exit code and log tail),
                or ``timeout_s`` passed; or what ``check`` raised (such as
                :class:`WrongServerError`).
        """
        deadline = self.started_at + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise ProcessStartError(
                    self._with_log(f"{self.name} exited with code {code} before it was ready")
                )
            if check is None or check():
                return time.monotonic() - self.started_at
            if time.monotonic() >= deadline:
                raise ProcessStartError(
                    self._with_log(f"{self.name} was not ready within {timeout_s:.0f} s")
                )
            time.sleep(poll_s)

    def wait(self, timeout_s: float) -> int:
        """Wait for the child to end; its exit code.

        Raises:
            ProcessTimeoutError: It ran past ``timeout_s``; the group has been stopped.
        """
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ProcessTimeoutError(
                self._with_log(
                    f"{self.name} did not finish within {timeout_s:.0f} s; its process "
                    "group was stopped"
                )
            ) from None
        self.stop()  # what it left running in its group
        return code

    def stop(self, grace_s: float = GRACE_S) -> int | None:
        """SIGTERM the group, SIGKILL what is left after ``grace_s``; the exit code.

        Idempotent. Waits until no process of the group runs any more.
        """
        if self.stopped:
            return self.process.returncode
        self.stopped = True
        _LIVE.pop(self.pid, None)
        if self.process.poll() is None or group_alive(self.pgid):
            _signal_group(self.pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
            if not _wait_group_gone(self.pgid, max(0.5, grace_s / 2)):
                log.warning("%s: group %d outlived SIGTERM; killing it", self.name, self.pgid)
                _signal_group(self.pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=grace_s)
                _wait_group_gone(self.pgid, grace_s)
        return self.process.returncode


#: Children not stopped yet, by pid: what the atexit and signal handlers stop.
_LIVE: dict[int, Child] = {}
_HANDLERS_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False
_ATEXIT_REGISTERED = False
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def stop_all() -> None:
    """Stop every child still running (the atexit and signal handlers call this).

    Newest first, as nested ``with`` blocks would: a server stops before what it
    depends on (a scoring replica before the Redis and MLflow servers it reads).
    """
    for child in reversed(list(_LIVE.values())):
        try:
            child.stop()
        except Exception:  # keep stopping the others
            log.exception("could not stop %s (pid %d)", child.name, child.pid)


def _install_handlers() -> None:
    """atexit, and SIGTERM/SIGHUP handlers that stop the children first (main thread)."""
    global _ATEXIT_REGISTERED, _HANDLERS_INSTALLED
    with _HANDLERS_LOCK:
        if not _ATEXIT_REGISTERED:
            atexit.register(stop_all)
            _ATEXIT_REGISTERED = True
        if _HANDLERS_INSTALLED or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set there; atexit and pdeathsig remain
        for signum in _HANDLED_SIGNALS:
            previous = signal.getsignal(signum)

            def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
                stop_all()
                if callable(previous):
                    previous(number, frame)
                elif previous != signal.SIG_IGN:
                    raise SystemExit(128 + number)

            signal.signal(signum, handler)
        _HANDLERS_INSTALLED = True


def start_child(
    command: Sequence[str],
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    log_path: Path | None = None,
    die_with_parent: bool = True,
) -> Child:
    """Start ``command`` as the leader of a new session and process group.

    Args:
        command: Program and arguments.
        name: How messages call it (default: the program's name).
        env: Its environment (default: this one).
        cwd: Its working directory.
        log_path: File receiving its stdout and stderr (appended); None: inherited.
        die_with_parent: On Linux, SIGTERM it when the thread starting it ends (so
            start long-lived children from a thread that outlives them, such as the
            main thread).

    Returns:
        The :class:`Child`; use it as a context manager so that it is always stopped.
    """
    _install_handlers()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    output = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
    try:
        process = subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_parent_death_signal() if die_with_parent else None,
        )
    except OSError as error:
        raise ProcessStartError(f"could not start {list(command)}: {error}") from error
    finally:
        if output is not None:
            output.close()
    child = Child(name or Path(command[0]).name, command, process, log_path)
    _LIVE[child.pid] = child
    log.info("started %s (pid %d): %s", child.name, child.pid, " ".join(command))
    return child


@contextlib.contextmanager
def child_process(
    command: Sequence[str],
    *,
    ready: ReadyCheck | None = None,
    timeout_s: float = 180.0,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    log_path: Path | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    port_hint: str = "",
) -> Iterator[Child]:
    """Start ``command``, wait until ``ready``, yield it; always stop its group after.

    With ``port``, that port must be free before the start (see :func:`ensure_port_free`;
    ``port_hint`` says how to choose another one).
    """
    if port is not None:
        ensure_port_free(port, host, hint=port_hint)
    with start_child(command, name=name, env=env, cwd=cwd, log_path=log_path) as child:
        child.wait_ready(ready, timeout_s)
        yield child


def run_child(
    command: Sequence[str],
    *,
    timeout_s: float,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    log_path: Path | None = None,
) -> int:
    """Run ``command`` to the end in its own group; its exit code.

    Unlike ``subprocess.run(timeout=...)``, which SIGKILLs only the direct child, a
    timeout (or any exception here, such as a test timeout) SIGTERMs the whole group
    first, so the child can stop its own children.

    Raises:
        ProcessTimeoutError: It ran past ``timeout_s`` (the group is stopped).
    """
    with start_child(command, name=name, env=env, cwd=cwd, log_path=log_path) as child:
        return child.wait(timeout_s)


# --------------------------------------------------------------------------------------
# Readiness over HTTP
# --------------------------------------------------------------------------------------


def get_json(url: str, timeout_s: float = 2.0) -> tuple[int, dict[str, Any]] | None:
    """Status and JSON object body of ``GET url``; None when nothing (sensible) answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as error:  # 4xx/5xx still carry a body
        status, raw = error.code, error.read()
    except (OSError, ValueError):  # refused, reset, timed out, malformed URL
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return status, {}
    return status, body if isinstance(body, dict) else {}


def http_ok(url: str) -> ReadyCheck:
    """Ready when ``GET url`` answers 200."""

    def check() -> bool:
        answer = get_json(url)
        return answer is not None and answer[0] == 200

    return check


def identity_check(
    url: str,
    instance_id: str,
    *,
    ready: Callable[[int, dict[str, Any]], bool] = lambda status, _: status == 200,
) -> ReadyCheck:
    """Ready when ``GET url`` is answered by *this* instance and ``ready`` holds.

    The body must carry ``instance_id``; a body with another one (or none) raises
    :class:`WrongServerError`: some other server holds the port.
    """

    def check() -> bool:
        answer = get_json(url)
        if answer is None:
            return False
        status, body = answer
        if body.get("instance_id") != instance_id:
            raise WrongServerError(
                f"{url} is answered by another server (instance {body.get('instance_id')!r}, "
                f"pid {body.get('pid')}, state folder {body.get('home')}), not the one "
                f"started here (instance {instance_id!r}): stop that server or choose "
                "another port"
            )
        return ready(status, body)

    return check


def new_instance_id() -> str:
    """A fresh instance id for a server child."""
    return uuid.uuid4().hex


@contextlib.contextmanager
def mlflow_server(
    port: int,
    backend_store_uri: str,
    artifacts: Mapping[str, str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 240.0,
) -> Iterator[Child]:
    """``mlflow server`` on loopback ``port`` with one worker, ready when ``/health`` is.

    Args:
        port: Its port (it must be free).
        backend_store_uri: Runs and registry (``sqlite:///...``, ``postgresql://...``).
        artifacts: The artifact option: ``{"--default-artifact-root": uri}`` (clients
            write there themselves) or ``{"--artifacts-destination": uri}`` (the server
            proxies ``mlflow-artifacts:/``, so only it needs the store's credentials).
        log_path: Where its output goes.
        env: Its environment (default: this process's).
        timeout_s: How long it may take to answer (its first start migrates the store).

    Raises:
        ProcessStartError: As :func:`child_process`.
    """
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend_store_uri, "--workers", "1",
        *(part for option in artifacts.items() for part in option),
    ]  # fmt: skip
    with child_process(
        command, ready=http_ok(f"http://127.0.0.1:{port}/health"), timeout_s=timeout_s,
        name="mlflow server", env=env, log_path=log_path, port=port,
    ) as child:  # fmt: skip
        yield child


@contextlib.contextmanager
def scoring_service(
    port: int,
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout_s: float = 180.0,
    command: Sequence[str] | None = None,
    port_hint: str = "",
) -> Iterator[Child]:
    """``driftline serve`` on ``host:port`` (or ``command``), ready and verified as ours.

    The child gets a fresh instance id in ``DRIFTLINE_SERVE_INSTANCE_ID``; it is ready
    when its ``/ready`` answers 200 (a champion is loaded) with that id, which is also
    on the yielded child's ``instance_id``.

    Raises:
        ProcessStartError: The port is taken, the server exited (the end of its log is
            in the message), was not ready in time, or another server answers.
    """
    from driftline.serving.app import INSTANCE_ENV

    instance_id = new_instance_id()
    child_env = {**(os.environ if env is None else env), INSTANCE_ENV: instance_id}
    binary = str(Path(sys.executable).with_name("driftline"))
    argv = [binary, "serve", "--host", host, "--port", str(port)]
    if command is not None:
        argv = list(command)
    check = identity_check(f"http://{host}:{port}/ready", instance_id)
    with child_process(
        argv,
        ready=check,
        timeout_s=timeout_s,
        name="driftline serve",
        env=child_env,
        log_path=log_path,
        port=port,
        host=host,
        port_hint=port_hint,
    ) as child:
        child.instance_id = instance_id
        yield child
