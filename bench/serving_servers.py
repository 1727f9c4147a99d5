"""The serving benchmark's servers: CPU pinning, their commands, start, readiness, stop.

Both servers run one worker process, pinned to CPU 0 with ``taskset`` (with
``OMP_NUM_THREADS=1``) when the machine has at least two CPUs; the load generator (the
benchmark's process) is pinned to CPU 1. Each server is a child the benchmark owns
(:func:`driftline.orchestration.processes.start_child`): its own process group, stopped
with SIGTERM (SIGKILL after 15 s) however the benchmark ends, on a port that was free.
The driftline server gets an instance id and must answer ``/ready`` with it, so a
leftover server on the same port is never measured instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi
import torch
import uvicorn
from serving_workload import BASELINE, CANDIDATE, log_settings, pinned_version

from driftline.core.settings import Settings, get_settings
from driftline.orchestration.processes import (
    Child,
    ReadyCheck,
    ensure_port_free,
    free_port,
    http_ok,
    identity_check,
    new_instance_id,
    start_child,
)
from driftline.serving import FeastFeatureSource, ModelProvider, create_app
from driftline.serving.app import INSTANCE_ENV

SERVER_CPU, CLIENT_CPU = 0, 1
READY_TIMEOUT_S = 240.0
#: Seconds between SIGTERM and SIGKILL when a server is stopped.
STOP_GRACE_S = 15.0
BENCH_SCRIPT = Path(__file__).resolve().with_name("serving_bench.py")


def pinning_plan(enabled: bool) -> dict[str, Any]:
    """Where the servers and the load generator run (pinned only with 2+ usable CPUs)."""
    usable = sorted(os.sched_getaffinity(0))
    if not enabled:
        return {"pinned": False, "reason": "--no-pin", "usable_cpus": usable}
    if len(usable) < 2 or shutil.which("taskset") is None:
        reason = "fewer than 2 usable CPUs" if len(usable) < 2 else "taskset not found"
        return {"pinned": False, "reason": reason, "usable_cpus": usable}
    return {
        "pinned": True,
        "usable_cpus": usable,
        "server_cpus": [usable[SERVER_CPU]],
        "load_generator_cpus": [usable[CLIENT_CPU]],
        "server_threads": "OMP_NUM_THREADS=1 (torch intra-op threads), both servers",
        "in_process_section": "load generator's CPU, torch.set_num_threads(1)",
    }


def pin_self(plan: dict[str, Any]) -> None:
    """Pin this process (load generator, in-process section) as ``plan`` says."""
    if plan["pinned"]:
        os.sched_setaffinity(0, set(plan["load_generator_cpus"]))
        torch.set_num_threads(1)


def server_env(settings: Settings, plan: dict[str, Any]) -> dict[str, str]:
    """Environment of both servers: this one, the venv first on PATH, MLflow's URIs."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["DRIFTLINE_HOME"] = str(settings.home)
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    env["MLFLOW_REGISTRY_URI"] = settings.mlflow_tracking_uri
    env["DRIFTLINE_SERVE_FEATURE_TIMEOUT_MS"] = str(settings.serve_feature_timeout_ms)
    env["DRIFTLINE_SERVE_RATE_LIMIT_PER_SECOND"] = str(settings.serve_rate_limit_per_second)
    if plan["pinned"]:
        env["OMP_NUM_THREADS"] = "1"
        env["MKL_NUM_THREADS"] = "1"
    return env


@dataclass
class Server:
    """One started server: its child process, where it answers, how it says ready."""

    name: str
    child: Child
    base_url: str
    ready: ReadyCheck

    @property
    def command(self) -> list[str]:
        """The command line it was started with (``taskset`` included when pinned)."""
        return self.child.command

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds from its start until its readiness route answered (see the check)."""
        return self.child.wait_ready(self.ready, timeout_s)

    def stop(self) -> int | None:
        """Stop its process group; its exit code."""
        return self.child.stop(STOP_GRACE_S)


def commands(
    settings: Settings, version: str, ports: dict[str, int], folder: Path
) -> dict[str, list[str]]:
    """The driftline app (``serving_bench.py --serve``) and ``mlflow models serve``."""
    driftline_cmd = [
        sys.executable,
        str(BENCH_SCRIPT),
        "--serve",
        "--version",
        version,
        "--port",
        str(ports[CANDIDATE]),
        "--log-home",
        str(folder / "driftline-home"),
    ]
    mlflow_cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{settings.model_name}/{version}",
        "--env-manager",
        "local",
        "-w",
        "1",
        "-h",
        "127.0.0.1",
        "-p",
        str(ports[BASELINE]),
    ]
    return {CANDIDATE: driftline_cmd, BASELINE: mlflow_cmd}


def start_servers(
    settings: Settings, version: str, plan: dict[str, Any], folder: Path, stack: ExitStack
) -> dict[str, Server]:
    """Start the driftline app and ``mlflow models serve`` on the same version.

    Both start at once (readiness is awaited by :meth:`Server.wait_ready`); ``stack``
    stops them when it closes.
    """
    env = server_env(settings, plan)
    ports = {CANDIDATE: free_port(), BASELINE: free_port()}
    instance = new_instance_id()
    envs = {CANDIDATE: {**env, INSTANCE_ENV: instance}, BASELINE: env}
    servers: dict[str, Server] = {}
    for name, command in commands(settings, version, ports, folder).items():
        ensure_port_free(ports[name])
        if plan["pinned"]:
            cpus = ",".join(str(c) for c in plan["server_cpus"])
            command = ["taskset", "-c", cpus, *command]
        base_url = f"http://127.0.0.1:{ports[name]}"
        ready = (
            identity_check(base_url + "/ready", instance)
            if name == CANDIDATE
            else http_ok(base_url + "/ping")
        )
        child = stack.enter_context(
            start_child(command, name=name, env=envs[name], log_path=folder / f"{name}.log")
        )
        servers[name] = Server(name, child, base_url, ready)
    return servers


def serve_main(args: argparse.Namespace) -> int:
    """``--serve``: the driftline app on one version, prediction log under ``--log-home``.

    Built like ``driftline serve`` (uvicorn, one process, ``log_level="info"``), with a
    model provider pinned to ``--version`` instead of the registry's aliases.
    """
    settings = get_settings()
    if not args.version or not args.log_home:
        raise SystemExit("--serve needs --version and --log-home")
    # As the CLI's callback does for `driftline serve`: warnings (failed store calls,
    # breakers) reach the log with their level and logger (see server_warnings).
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def factory() -> fastapi.FastAPI:
        provider = ModelProvider(settings, resolve=pinned_version(args.version))
        return create_app(
            log_settings(settings, args.log_home),
            features=FeastFeatureSource(settings),
            models=provider,
        )

    uvicorn.run(factory, factory=True, host="127.0.0.1", port=args.port, log_level="info")
    return 0
