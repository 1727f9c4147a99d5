"""The production profile on one machine: ``make demo PROFILE=prod``.

The closed loop of ``make demo`` on the production kind of every component, each a child
process of this one, on a free loopback port, with its state under
``$DRIFTLINE_HOME/prod/``, stopped however this process ends (see
:mod:`driftline.orchestration.processes`):

=====================  ==============================================  =====================
component              here                                            cloud (``terraform``)
=====================  ==============================================  =====================
metadata + registry    PostgreSQL (:mod:`.postgres`): databases        RDS PostgreSQL
                       ``airflow``, ``mlflow``, ``optuna``
online store, events   ``redis-server`` (db 0 Feast online store,      ElastiCache Redis
                       db 1 the fresh-feature event state)
object store           ``moto_server`` (S3 API, in memory): buckets    S3
                       for MLflow artifacts, the DVC remote, the lake
tracking + registry    ``mlflow server`` (PostgreSQL backend, S3       MLflow on K8s
                       artifacts through the server's proxy)
orchestration          Airflow scheduler, DAG processor, triggerer,    Airflow on K8s
                       API server, LocalExecutor on PostgreSQL
scoring                two ``driftline serve`` replicas behind         serving Deployment +
                       ``nginx`` (``least_conn``)                      Service/Ingress
feature job            Spark standalone master and one worker          a Spark cluster
                       (pyspark's own ``spark-class``)
=====================  ==============================================  =====================

**The lake is on S3** (:data:`LAKE_URI`, ``s3://driftline-lake/lake``): landing, raw,
staging and quarantine zones, store and fresh features, simulator truth, the prediction
log and the monitoring state, read and written through fsspec (s3fs) by every process
(this one, the scheduler's task processes, the replicas), which find the emulator
through ``AWS_ENDPOINT_URL_S3``. Spark would read S3 through Hadoop's ``s3a``, whose
``hadoop-aws`` jars come from Maven, which this machine cannot reach (pyspark ships
none): without them the feature job reads its raw days on the driver with pyarrow
through fsspec and hands Spark an Arrow table (:mod:`driftline.data.features`). Feast's
offline source reads the feature table on S3 (its ``s3_endpoint_override``). Since
``moto_server`` keeps objects in memory only, the lake is copied to
``prod/s3/lake`` at the end of a run (:func:`export_lake`) for the checks after it.
MLflow artifacts (models, drift references, reports logged as artifacts) go to S3
through the MLflow server. The Feast registry is an object on S3
(``s3://driftline-lake/feast/registry.db``; Feast's S3 store reads the endpoint from
``FEAST_S3_ENDPOINT_URL``), the same one for every process.

What the profile does, after starting the components (the outside world's part):

1. simulates the history and loads it with the functions the ingest DAG's tasks call,
   in one pass (a first load: a backfill through the scheduler costs a minute a day on
   two cores);
2. unpauses the DAGs and triggers ``retrain_promote`` once by REST with the history's
   window: the first model becomes champion;
3. starts the two replicas and nginx, posts one backfill of the ingest DAG over the
   served days (``max_active_runs`` 1): each run's landing sensor waits for its day;
4. for each served day: replays the day's traffic to nginx, then lands the day's files.
   The scheduler does the rest: ingest, the asset event, ``monitor_drift``, and, when
   it asks for one, ``retrain_promote`` on its asset event (train, staging gate, canary,
   analysis, promotion). The world only waits: for the day's ``monitor_drift`` run to
   end before the next day comes, and for a requested retrain's canary to be served
   before replaying the canary's day.
5. pushes what this checkout's DVC tracks to the ``s3`` remote (``dvc push -r s3``,
   :mod:`driftline.orchestration.dvc_remote`) in the ``driftline-dvc`` bucket.

It prints the timeline (days, milestones, models) and where each UI is, and writes
the timeline as JSON (``$DRIFTLINE_HOME/prod/timeline.json``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import socket
import string
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from driftline.core.interval import Interval
from driftline.orchestration import processes
from driftline.orchestration.airflow_rest import AirflowRest
from driftline.orchestration.airflow_stack import AirflowStack, StackConfig, airflow_stack
from driftline.orchestration.demo import LoopOptions
from driftline.orchestration.postgres import PostgresServer, ensure_postgres, stop_postgres
from driftline.orchestration.processes import (
    Child,
    child_process,
    free_port,
    http_ok,
    run_child,
    scoring_service,
)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
#: The nginx configuration template (``string.Template``).
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "nginx.conf.template"
#: The buckets created in the S3 emulator.
BUCKETS = {"lake": "driftline-lake", "mlflow": "driftline-mlflow", "dvc": "driftline-dvc"}
#: The lake of every process of the profile (``DRIFTLINE_LAKE_URI``).
LAKE_URI = f"s3://{BUCKETS['lake']}/lake"
#: The Feast registry: one object on S3 that every process of the profile reads.
FEAST_REGISTRY = f"s3://{BUCKETS['lake']}/feast/registry.db"
#: The databases of the PostgreSQL cluster.
DATABASES = ("airflow", "mlflow", "optuna")
#: Credentials of the S3 emulator (moto accepts any; boto3 wants some).
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "driftline-local",
    "AWS_SECRET_ACCESS_KEY": "driftline-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Components, in start order; the ports file names them.
COMPONENTS = (
    "postgres", "redis", "s3", "spark", "spark-ui", "mlflow", "airflow", "nginx",
    "replica-1", "replica-2",
)  # fmt: skip
#: Cores and memory of the Spark standalone worker (the machine's two cores; the
#: feature job's executor takes Spark's default 1 GiB).
SPARK_WORKER_CORES = 2
SPARK_WORKER_MEMORY = "2g"
TERMINAL = {"success", "failed"}


class ProdError(RuntimeError):
    """The profile cannot go on (the message says which step failed)."""


# --------------------------------------------------------------------------------------
# Layout and ports
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProdLayout:
    """Where the profile keeps its state: ``<home>/prod/<component>``."""

    home: Path

    @property
    def root(self) -> Path:
        """``$DRIFTLINE_HOME/prod``."""
        return self.home / "prod"

    def folder(self, name: str) -> Path:
        """The state (and log) folder of component ``name``, created."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def postgres_root(self) -> Path:
        """PostgreSQL's folder: outside pytest's private tmp folders when root.

        As root the cluster runs as the ``postgres`` user, which must traverse every
        parent folder; a state folder under a private one gets a link to a shared
        temporary folder instead.
        """
        path = self.root / "postgres"
        if os.geteuid() != 0 or _traversable(self.root):
            return path
        if not path.exists():
            target = Path(tempfile.mkdtemp(prefix="driftline-prod-pg-"))
            target.chmod(0o755)
            self.root.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        return path.resolve()


def _traversable(path: Path) -> bool:
    """Whether every folder from / to ``path`` lets others in (o+x)."""
    path.mkdir(parents=True, exist_ok=True)
    return all(folder.stat().st_mode & 0o001 for folder in (path, *path.parents))


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def choose_ports(layout: ProdLayout) -> dict[str, int]:
    """A loopback port per component: the ones recorded before while free, else new ones.

    Recorded in ``prod/ports.json`` so a restart finds the same URLs (the PostgreSQL
    cluster, which outlives a run that was killed, keeps its port).
    """
    path = layout.root / "ports.json"
    known: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    postgres_running = (layout.root / "postgres" / "data" / "postmaster.pid").exists()
    ports: dict[str, int] = {}
    for name in COMPONENTS:
        port = known.get(name)
        reuse = port is not None and (_port_free(port) or (name == "postgres" and postgres_running))
        while port is None or not reuse or port in ports.values():
            port, reuse = free_port(), True  # free_port may hand out one twice
        ports[name] = port
    layout.root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ports, indent=2) + "\n")
    return ports


# --------------------------------------------------------------------------------------
# The components
# --------------------------------------------------------------------------------------


def binary(name: str) -> str:
    """Path of program ``name``: this environment's, else the ``PATH``'s (and sbin).

    Raises:
        ProdError: Not installed (the message names the Makefile target).
    """
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise ProdError(f"{name} is not installed: run `make prod-deps` (Debian packages)")
    return found


def ensure_databases(layout: ProdLayout, port: int) -> PostgresServer:
    """The profile's PostgreSQL cluster, running, with every database of :data:`DATABASES`."""
    server: PostgresServer | None = None
    for database in DATABASES:
        server = ensure_postgres(layout.postgres_root, port, database)
    assert server is not None
    return server


def redis_ping(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """Ready when ``PING`` on ``host:port`` answers ``+PONG``."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    return check


@contextlib.contextmanager
def redis_server(layout: ProdLayout, port: int) -> Iterator[Child]:
    """``redis-server`` on loopback, persistence off (the online store is rebuilt by
    materialization; events are replayed), data folder under ``prod/redis``."""
    folder = layout.folder("redis")
    command = [
        binary("redis-server"),
        "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
        "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
    ]  # fmt: skip
    with child_process(
        command, ready=redis_ping(port), timeout_s=60, name="redis-server",
        log_path=folder / "redis.log", port=port,
    ) as child:  # fmt: skip
        yield child


@contextlib.contextmanager
def s3_server(layout: ProdLayout, port: int) -> Iterator[Child]:
    """``moto_server`` (the S3 API in memory) on loopback, with the :data:`BUCKETS`."""
    folder = layout.folder("s3")
    command = [binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with child_process(
        command, ready=http_ok(f"http://127.0.0.1:{port}/moto-api/data.json"), timeout_s=90,
        name="moto_server", log_path=folder / "moto.log", port=port,
    ) as child:  # fmt: skip
        create_buckets(f"http://127.0.0.1:{port}")
        yield child


def _spark_master(port: int) -> str:
    """The URL of a Spark standalone master on loopback ``port``."""
    return f"spark://127.0.0.1:{port}"


def _spark_ui(port: int) -> str:
    """The web UI (and ``/json/``) of a Spark master whose UI listens on ``port``."""
    return f"http://127.0.0.1:{port}"


def spark_class() -> str:
    """pyspark's own ``spark-class`` launcher (its jars hold the standalone cluster)."""
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def spark_workers(ui_url: str) -> Callable[[], bool]:
    """Ready when the master at ``ui_url`` lists an alive worker."""

    def check() -> bool:
        answer = processes.get_json(f"{ui_url}/json/")
        return answer is not None and int(answer[1].get("aliveworkers", 0)) > 0

    return check


@contextlib.contextmanager
def spark_cluster(layout: ProdLayout, port: int, ui_port: int) -> Iterator[str]:
    """A Spark standalone master and one worker on loopback, from the installed pyspark.

    The master listens on ``port`` (its web UI and JSON on ``ui_port``); the worker
    offers :data:`SPARK_WORKER_CORES` cores and :data:`SPARK_WORKER_MEMORY`, and its
    executors (one per feature-job application) run under ``prod/spark/work``. Yields
    the master URL; both are stopped (with their executors) on the way out.
    """
    folder = layout.folder("spark")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(folder)}
    launcher, url, ui = spark_class(), _spark_master(port), _spark_ui(ui_port)
    master = [
        launcher, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
        "--port", str(port), "--webui-port", str(ui_port),
    ]  # fmt: skip
    worker = [
        launcher, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
        "--cores", str(SPARK_WORKER_CORES), "--memory", SPARK_WORKER_MEMORY,
        "--work-dir", str(folder / "work"), "--webui-port", "0",
    ]  # fmt: skip
    with (
        child_process(
            master, ready=http_ok(f"{ui}/json/"), timeout_s=120, name="spark-master",
            env=env, log_path=folder / "master.log", port=port,
        ),
        child_process(
            worker, ready=spark_workers(ui), timeout_s=120, name="spark-worker",
            env=env, log_path=folder / "worker.log",
        ),
    ):  # fmt: skip
        yield url


def spark_applications(ui_url: str) -> dict[str, Any]:
    """What the Spark master ran: its workers and applications (name, state, cores)."""
    answer = processes.get_json(f"{ui_url}/json/")
    body = answer[1] if answer is not None else {}
    apps = [*body.get("completedapps", []), *body.get("activeapps", [])]
    return {
        "master": body.get("url"),
        "ui": ui_url,
        "alive_workers": body.get("aliveworkers", 0),
        "applications": len(apps),
        "states": dict(Counter(str(app.get("state")) for app in apps)),
        "names": sorted({str(app.get("name")) for app in apps}),
    }


def create_buckets(endpoint: str) -> None:
    """Create each bucket of :data:`BUCKETS` that is missing."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS.values():
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def export_lake(layout: ProdLayout) -> dict[str, Any]:
    """Copy the lake out of the emulator into ``prod/s3/lake``; what was copied.

    ``moto_server`` keeps its objects in memory, so they end with it; the copy is what
    the checks after a run (``make test-prod``) read. The profile itself never reads it.
    Needs the profile's S3 environment (:func:`settings_env`) in this process.
    """
    from driftline.core import lake

    target = layout.folder("s3") / "lake"
    if target.exists():
        shutil.rmtree(target)
    fs, root = lake.filesystem(LAKE_URI)
    fs.invalidate_cache(root)
    objects = fs.find(root)
    if objects:
        fs.get(root, str(target), recursive=True)
    return {"uri": LAKE_URI, "objects": len(objects), "export": str(target)}


def s3_objects(endpoint: str, bucket: str) -> list[str]:
    """Keys of every object in ``bucket`` of the emulator."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


@contextlib.contextmanager
def mlflow_server(
    layout: ProdLayout, port: int, backend_url: str, s3_endpoint: str
) -> Iterator[Child]:
    """``mlflow server`` on loopback: runs and registry in PostgreSQL, artifacts on S3.

    Clients reach the artifacts through the server (``mlflow-artifacts:/``), so only the
    server holds the S3 endpoint and credentials.
    """
    env = {**os.environ, **S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    artifacts = {"--artifacts-destination": f"s3://{BUCKETS['mlflow']}/artifacts"}
    log_path = layout.folder("mlflow") / "mlflow.log"
    with processes.mlflow_server(port, backend_url, artifacts, log_path=log_path, env=env) as child:
        yield child


def nginx_config(layout: ProdLayout, port: int, upstreams: list[int], max_body: int) -> Path:
    """Write the nginx configuration (from :data:`NGINX_TEMPLATE`); its path."""
    folder = layout.folder("nginx")
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / temp).mkdir(parents=True, exist_ok=True)
    servers = "\n".join(
        f"        server 127.0.0.1:{upstream} max_fails=0;" for upstream in upstreams
    )
    text = string.Template(NGINX_TEMPLATE.read_text()).substitute(
        root=str(folder), host="127.0.0.1", port=str(port), servers=servers, max_body=str(max_body)
    )
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


@contextlib.contextmanager
def nginx(layout: ProdLayout, port: int, upstreams: list[int], max_body: int) -> Iterator[Child]:
    """nginx on loopback balancing ``upstreams`` (``least_conn``), config checked first."""
    config = nginx_config(layout, port, upstreams, max_body)
    folder = config.parent
    command = [binary("nginx"), "-p", str(folder), "-c", str(config)]
    # The check runs to its end (a child started to be "ready" would race nginx -t's
    # exit: on an idle machine it is gone before the first poll).
    log_path = folder / "nginx.log"
    if run_child([*command, "-t"], timeout_s=30, name="nginx -t", log_path=log_path) != 0:
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise ProdError(f"nginx -t refused {config}:\n{tail}")
    with child_process(
        command, ready=http_ok(f"http://127.0.0.1:{port}/nginx-health"), timeout_s=60,
        name="nginx", log_path=log_path, port=port,
    ) as child:  # fmt: skip
        yield child


# --------------------------------------------------------------------------------------
# Settings of every process
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProdEndpoints:
    """URLs of the running components."""

    postgres: PostgresServer
    redis_port: int
    s3_port: int
    spark_port: int
    spark_ui_port: int
    mlflow_port: int
    airflow_port: int
    nginx_port: int
    replica_ports: tuple[int, ...]

    @property
    def s3_endpoint(self) -> str:
        """The S3 API endpoint."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def spark_master(self) -> str:
        """The Spark standalone master (``DRIFTLINE_SPARK_MASTER``)."""
        return _spark_master(self.spark_port)

    @property
    def spark_ui_url(self) -> str:
        """The Spark master's web UI (and its JSON at ``/json/``)."""
        return _spark_ui(self.spark_ui_port)

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking server (and UI)."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        """The Airflow API server (and UI)."""
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def nginx_url(self) -> str:
        """The load balancer in front of the replicas."""
        return f"http://127.0.0.1:{self.nginx_port}"

    def replica_urls(self) -> list[str]:
        """Each replica, bypassing nginx."""
        return [f"http://127.0.0.1:{port}" for port in self.replica_ports]


def settings_env(
    layout: ProdLayout, endpoints: ProdEndpoints, api_key: str, fields: Mapping[str, Any]
) -> dict[str, str]:
    """The ``DRIFTLINE_*`` (and S3) environment every process of the profile gets.

    Args:
        layout: The state folders.
        endpoints: The components' URLs.
        api_key: The scoring API key (the development key is refused outside ``local``).
        fields: ``Settings.model_fields``: settings other helpers add (the event store)
            are set only where they exist.
    """
    redis = f"127.0.0.1:{endpoints.redis_port}"
    env = {
        "DRIFTLINE_HOME": str(layout.home),
        "DRIFTLINE_MLFLOW_TRACKING_URI": endpoints.mlflow_url,
        # The experiment's artifacts through the server's proxy, which writes them to S3
        # (the default, a local folder, would bypass the server).
        "DRIFTLINE_MLFLOW_ARTIFACT_URI": "mlflow-artifacts:/driftline",
        # mlflow-artifacts: URIs resolve against MLflow's process-global tracking URI
        # (pyfunc.load_model, download_artifacts), not the client driftline passes.
        "MLFLOW_TRACKING_URI": endpoints.mlflow_url,
        "DRIFTLINE_OPTUNA_STORAGE": endpoints.postgres.url("optuna"),
        "DRIFTLINE_SPARK_MASTER": endpoints.spark_master,
        "DRIFTLINE_FEAST_ENV": "production",
        "DRIFTLINE_ENVIRONMENT": "production-local",
        "DRIFTLINE_REDIS_URL": f"{redis},db=0",
        # Feast's registry on S3: every process (loop, scheduler tasks, replicas) reads
        # the same object; Feast's S3 store takes its endpoint from FEAST_S3_ENDPOINT_URL.
        "DRIFTLINE_FEAST_REGISTRY": FEAST_REGISTRY,
        "FEAST_S3_ENDPOINT_URL": endpoints.s3_endpoint,
        "DRIFTLINE_SERVE_API_KEYS": api_key,
        # The lake on S3; s3fs (and Feast's offline source) find the emulator through
        # AWS_ENDPOINT_URL_S3.
        "DRIFTLINE_LAKE_URI": LAKE_URI,
        "MLFLOW_S3_ENDPOINT_URL": endpoints.s3_endpoint,
        "AWS_ENDPOINT_URL_S3": endpoints.s3_endpoint,
        **S3_CREDENTIALS,
    }
    if "event_store_url" in fields:
        env["DRIFTLINE_EVENT_STORE_URL"] = f"redis://{redis}/1"
    return env


# --------------------------------------------------------------------------------------
# Airflow's REST API
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AirflowApi(AirflowRest):
    """The REST client (:class:`~driftline.orchestration.airflow_rest.AirflowRest`) with
    waits that stop as soon as one of the profile's Airflow processes has died."""

    stack: AirflowStack | None = None

    def wait(
        self, until: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 3.0
    ) -> Any:
        """Poll ``until`` (the profile's processes must stay alive) until it is truthy.

        Raises:
            ProdError: Past ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stack is not None:
                self.stack.check_alive()
            value = until()
            if value:
                return value
            time.sleep(poll_s)
        raise ProdError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float) -> dict[str, Any]:
        """Wait until a run ends; the run."""

        def ended() -> dict[str, Any] | None:
            run = self.run(dag_id, run_id)
            return run if run["state"] in TERMINAL else None

        result: dict[str, Any] = self.wait(ended, timeout_s, f"{dag_id} run {run_id}")
        return result

    def failure_report(self, dag_id: str, run_id: str) -> str:
        """Task states and the end of the first failed task's log."""
        states = self.task_states(dag_id, run_id)
        lines = [f"{dag_id} {run_id}: {states}"]
        if self.stack is not None:
            logs = self.stack.config.airflow_home / "logs" / f"dag_id={dag_id}"
            failed = [p for p in sorted(logs.rglob("*.log")) if "Traceback" in p.read_text()]
            lines.extend(f"--- {p}\n{p.read_text()[-3000:]}" for p in failed[:2])
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProdOptions(LoopOptions):
    """The production profile's options: the loop's and the profile's own.

    The loop's are :class:`~driftline.orchestration.demo.LoopOptions` (period, drift,
    scale, timeline JSON, here by default ``$DRIFTLINE_HOME/prod/timeline.json``).

    ``trials`` and ``workers`` tune the first training only; retrains use the settings'
    ``tuning_trials`` and ``tuning_workers``.

    Attributes:
        replicas: Scoring replicas behind nginx.
        day_timeout_s: Longest wait for one served day's ingest and monitoring.
        retrain_timeout_s: Longest wait for a training (and its canary) to end.
    """

    replicas: int = 2
    day_timeout_s: float = 900.0
    retrain_timeout_s: float = 1800.0


@dataclass
class Profile:
    """The running profile: endpoints, settings environment, Airflow, the world's state."""

    layout: ProdLayout
    endpoints: ProdEndpoints
    env: dict[str, str]
    api: AirflowApi
    timeline: Any
    api_key: str
    seen_monitor_runs: set[str] = field(default_factory=set)
    seen_retrain_runs: set[str] = field(default_factory=set)
    replicas: list[Child] = field(default_factory=list)

    def replica(self, index: int, path: str) -> dict[str, Any]:
        """``GET path`` on replica ``index`` directly (not through nginx); the JSON body."""
        url = f"{self.endpoints.replica_urls()[index]}{path}"
        request = urllib.request.Request(url, headers={"X-API-Key": self.api_key})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                body = json.loads(reply.read())
        except (OSError, ValueError):
            return {}
        return body if isinstance(body, dict) else {}


def _narrate() -> Callable[..., None]:
    from driftline.orchestration.demo import say

    return say


def load_history(options: ProdOptions, config: Any) -> None:
    """Land and load the history with the ingest tasks' functions, in one pass.

    The same calls the DAG's tasks make (ingest, validate, features over the whole
    history in one Spark job, materialize); a first load, not the daily path. The Spark
    session is stopped after its job: this process lives on, and on the standalone
    master an open application keeps every core, so the scheduler's feature tasks
    would wait for executors forever.
    """
    from driftline.core.settings import get_settings
    from driftline.data.feast import materialize_interval
    from driftline.data.features import build_features
    from driftline.data.ingest import ingest, publish_validated
    from driftline.data.spark import stop_spark
    from driftline.simulator import write_landing

    cfg = get_settings()
    history = Interval.parse(options.start, options.serve_from)
    write_landing(config, history, cfg.lake_uri)
    for dataset in ("transactions", "labels"):
        ingest(dataset, history, cfg)
        publish_validated(dataset, history, cfg)
    _record_events(cfg, history)
    try:
        build_features(history, cfg)
    finally:
        stop_spark()
    materialize_interval(history, cfg)


def _record_events(cfg: Any, history: Interval) -> None:
    """Seed the fresh-feature event state (the ingest DAG's ``record_events`` task), where
    this checkout has one (:mod:`driftline.data.events`)."""
    try:
        from driftline.data.events import record_interval
    except ImportError:
        return
    record_interval(cfg, history)


def simulator_config(options: ProdOptions) -> Any:
    """The simulator configuration of the period (as ``make demo`` builds it)."""
    from driftline.core.settings import get_settings
    from driftline.simulator import DriftScenario, SimulatorConfig

    settings = get_settings()
    return SimulatorConfig(
        seed=settings.seed,
        rows_per_day=options.rows,
        fraud_rate=options.fraud_rate,
        anchor=settings.simulation_start,
        scenarios=tuple(DriftScenario.parse(item) for item in options.drift),
    )


def record_retrain(profile: Profile, run_id: str, day: str) -> dict[str, Any] | None:
    """Narrate an ended ``retrain_promote`` run from its tasks' results; the decision."""
    api, timeline = profile.api, profile.timeline
    dag = "retrain_promote"
    gate = api.result(dag, run_id, "staging_gate")
    if gate is None:
        trained = api.result(dag, run_id, "train_candidate") or {}
        timeline.event(day, "retrain rejected", version=trained.get("version"), run=run_id)
        return None
    timeline.event(day, "staging gate passed", version=gate["version"], reason=gate["reason"])
    canary = api.result(dag, run_id, "start_canary") or {}
    if canary.get("mode") == "canary":
        timeline.event(
            day, "canary started", version=canary["version"], champion=canary["champion"]
        )
    report = api.result(dag, run_id, "canary_analysis")
    if report:
        timeline.event(day, f"canary analysis: {report['verdict']}", reasons=report["reasons"])
    decision: dict[str, Any] = api.result(dag, run_id, "promote_or_rollback") or {}
    timeline.event(
        day,
        "promoted to champion" if decision.get("action") == "promote" else "canary rolled back",
        version=decision.get("version"),
        previous=decision.get("previous"),
    )
    return decision


def stop_wall_clock_runs(profile: Profile, wait_s: float = 0.0) -> list[str]:
    """Fail the ingest DAG's scheduled runs (the wall clock's day); their run ids.

    Unpausing a daily DAG with ``catchup=False`` starts the run of the latest interval
    of the real calendar, whose landing files never come in a simulated period: its
    sensor would wake a task process every poke for a day. The simulated days run as
    one backfill (:func:`serve_days`), like history on a real platform.
    """
    dag = "ingest_validate_materialize"
    deadline = time.monotonic() + wait_s
    while True:
        scheduled = [
            run["dag_run_id"]
            for run in profile.api.runs(dag)
            if run["run_type"] == "scheduled" and run["state"] not in TERMINAL
        ]
        if scheduled or time.monotonic() >= deadline:
            break
        time.sleep(2)
    for run_id in scheduled:
        profile.api.set_state(dag, run_id, "failed")
    return scheduled


def first_champion(profile: Profile, options: ProdOptions) -> None:
    """Trigger ``retrain_promote`` by REST on the history; the first model is champion.

    Raises:
        ProdError: The run failed or rejected the model.
    """
    conf = {
        "window_start": options.train_start.isoformat(),
        "window_end": options.serve_from.isoformat(),
        "trials": options.trials,
        "workers": options.workers,
    }
    run_id = profile.api.trigger("retrain_promote", conf)
    profile.seen_retrain_runs.add(run_id)
    run = profile.api.wait_run("retrain_promote", run_id, options.retrain_timeout_s)
    if run["state"] != "success":
        raise ProdError(profile.api.failure_report("retrain_promote", run_id))
    if record_retrain(profile, run_id, options.serve_from.isoformat()) is None:
        raise ProdError("the first model did not pass its gates; see the Airflow task logs")


def replay(profile: Profile, day: date, config: Any) -> dict[str, Any]:
    """Send the day's transactions through nginx; the replay result."""
    from driftline.serving.replay import replay_day

    result = replay_day(
        day,
        base_url=profile.endpoints.nginx_url,
        api_key=profile.api_key,
        rate=0,
        config=config,
        batch_size=100,
    ).to_dict()
    _narrate()(
        f"replay {day}: {result['ok']}/{result['sent']} scored via nginx, failed "
        f"{result['failed']}, variants {result['variants']}, versions {result['model_versions']}"
    )
    return result


def canary_views(profile: Profile) -> list[dict[str, Any]]:
    """What each replica says about the canary (``/admin/canary``, ``/ready``), directly."""
    views = []
    for index in range(len(profile.endpoints.replica_ports)):
        ready = profile.replica(index, "/ready")
        views.append(
            {
                "replica": index + 1,
                "pid": ready.get("pid"),
                "champion": ready.get("champion"),
                "canary": ready.get("canary"),
                "control": profile.replica(index, "/admin/canary"),
            }
        )
    return views


def monitored(profile: Profile, day: date) -> dict[str, Any] | None:
    """The ended asset-triggered ``monitor_drift`` run that judged ``day``, if any."""
    api = profile.api
    for run in api.runs("monitor_drift"):
        run_id = run["dag_run_id"]
        if run_id in profile.seen_monitor_runs or run["state"] not in TERMINAL:
            continue
        if day.isoformat() in api.consumed_days("monitor_drift", run_id):
            profile.seen_monitor_runs.add(run_id)
            return run
    return None


def record_monitor(profile: Profile, day: date, run: dict[str, Any]) -> bool:
    """Put a ``monitor_drift`` run on the timeline; whether it requested a retrain."""
    from driftline.orchestration.demo import drift_reason, monitor_entry

    api, run_id = profile.api, run["dag_run_id"]
    check = api.result("monitor_drift", run_id, "check_drift") or {}
    drift = check.get("drift") or {}
    entry = {**monitor_entry(run["state"], check), "run_id": run_id}
    profile.timeline.days.setdefault(str(day), {})["monitor"] = entry
    if drift.get("drifted"):
        profile.timeline.event(day, "drift detected", reason=drift_reason(drift))
    request = api.result("monitor_drift", run_id, "request_retrain")
    if request:
        profile.timeline.event(day, "retrain requested", **request)
    return bool(request)


def new_retrain_run(profile: Profile) -> str | None:
    """The id of a ``retrain_promote`` run not seen before (the asset event's), if any."""
    for run in profile.api.runs("retrain_promote"):
        if run["dag_run_id"] not in profile.seen_retrain_runs:
            profile.seen_retrain_runs.add(run["dag_run_id"])
            return str(run["dag_run_id"])
    return None


def wait_for_canary(profile: Profile, run_id: str, timeout_s: float) -> bool:
    """Wait until every replica serves a canary, or the retrain run ends; whether served."""

    def served_or_ended() -> str | None:
        views = canary_views(profile)
        if views and all(view["canary"] for view in views):
            return "canary"
        if profile.api.run("retrain_promote", run_id)["state"] in TERMINAL:
            return "ended"
        return None

    outcome = profile.api.wait(served_or_ended, timeout_s, "the canary", poll_s=2.0)
    return bool(outcome == "canary")


def serve_days(profile: Profile, options: ProdOptions, config: Any) -> None:
    """Each served day: replay through nginx, land the day; the scheduler does the rest."""
    from driftline.core.settings import get_settings
    from driftline.simulator import write_landing

    lake_uri = get_settings().lake_uri
    timeline, api = profile.timeline, profile.api
    last_day = options.end - timedelta(days=1)
    backfill = api.backfill("ingest_validate_materialize", options.serve_from, last_day)["id"]
    timeline.event(options.serve_from, "ingest backfill posted", id=backfill, until=options.end)
    pending: str | None = None
    for day in Interval.parse(options.serve_from, options.end).days():
        started = time.monotonic()
        info = timeline.days.setdefault(str(day), {})
        info["served"] = replay(profile, day, config)
        if pending is not None:
            info["canary_views"] = canary_views(profile)
        stop_wall_clock_runs(profile)  # a real midnight may have passed meanwhile
        write_landing(config, Interval.for_day(day), lake_uri)
        run = api.wait(
            functools.partial(monitored, profile, day),
            options.day_timeout_s,
            f"the monitor_drift run of {day}",
        )
        requested = record_monitor(profile, day, run)
        info["seconds"] = round(time.monotonic() - started, 1)
        if requested and pending is None:
            pending = api.wait(lambda: new_retrain_run(profile), 120, "the retrain run")
            timeline.event(day, "retrain_promote started by the asset event", run=pending)
            if wait_for_canary(profile, pending, options.retrain_timeout_s):
                views = canary_views(profile)
                info["canary_views"] = views
                timeline.event(
                    day,
                    "canary served by every replica",
                    weights=[view["control"].get("weight") for view in views],
                )
        if pending is not None:
            state = api.run("retrain_promote", pending)["state"]
            if state in TERMINAL:
                record_retrain(profile, pending, str(day))
                pending = None
    if pending is not None:
        api.wait_run("retrain_promote", pending, options.retrain_timeout_s)
        record_retrain(profile, pending, str(options.end - timedelta(days=1)))


@contextlib.contextmanager
def components(layout: ProdLayout, options: ProdOptions) -> Iterator[Profile]:
    """Start every component but the replicas and nginx; yield the profile; stop them.

    PostgreSQL is stopped at the end only when this call started it.
    """
    from driftline.core.settings import Settings
    from driftline.orchestration.demo import Timeline

    ports = choose_ports(layout)
    pg_root = layout.postgres_root
    was_running = (pg_root / "data" / "postmaster.pid").exists()
    try:
        with contextlib.ExitStack() as stack:
            server = ensure_databases(layout, ports["postgres"])
            stack.enter_context(redis_server(layout, ports["redis"]))
            stack.enter_context(s3_server(layout, ports["s3"]))
            endpoints = ProdEndpoints(
                postgres=server,
                redis_port=ports["redis"],
                s3_port=ports["s3"],
                spark_port=ports["spark"],
                spark_ui_port=ports["spark-ui"],
                mlflow_port=ports["mlflow"],
                airflow_port=ports["airflow"],
                nginx_port=ports["nginx"],
                replica_ports=tuple(ports[f"replica-{i + 1}"] for i in range(options.replicas)),
            )
            stack.enter_context(spark_cluster(layout, ports["spark"], ports["spark-ui"]))
            stack.enter_context(
                mlflow_server(layout, ports["mlflow"], server.url("mlflow"), endpoints.s3_endpoint)
            )
            api_key = _api_key(layout)
            env = settings_env(layout, endpoints, api_key, Settings.model_fields)
            os.environ.update(env)  # this process's own calls (history load, replay)
            config = StackConfig(
                airflow_home=layout.home / "airflow",
                dags_folder=REPO / "dags",
                db_url=server.url("airflow"),
                api_port=ports["airflow"],
                all_admins=True,
                env=env,
            )
            stack_log = layout.folder("airflow")
            running = stack.enter_context(airflow_stack(config, log_dir=stack_log))
            yield Profile(
                layout, endpoints, env, AirflowApi(running.api_url, stack=running),
                Timeline(drift=list(options.drift)), api_key,
            )  # fmt: skip
    finally:
        if not was_running:
            stop_postgres(pg_root)


def _api_key(layout: ProdLayout) -> str:
    """The scoring API key of the profile, generated once under ``prod/``."""
    path = layout.root / "api_key"
    if not path.exists():
        layout.root.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


@contextlib.contextmanager
def scoring(profile: Profile) -> Iterator[list[Child]]:
    """The replicas (each ready with the champion) and nginx in front of them."""
    from driftline.core.settings import get_settings

    layout, endpoints = profile.layout, profile.endpoints
    with contextlib.ExitStack() as stack:
        for index, port in enumerate(endpoints.replica_ports):
            folder = layout.folder(f"replica-{index + 1}")
            child = stack.enter_context(
                scoring_service(port, log_path=folder / "serve.log", timeout_s=300)
            )
            profile.replicas.append(child)
        max_body = get_settings().serve_max_body_bytes
        stack.enter_context(
            nginx(layout, endpoints.nginx_port, list(endpoints.replica_ports), max_body)
        )
        yield profile.replicas


def registry_snapshot() -> dict[str, Any]:
    """Aliases and tags of the registered model and of each version (from the server)."""
    from driftline.core.settings import get_settings
    from driftline.lifecycle import registry

    cfg = get_settings()
    client = registry.client(cfg)
    model = client.get_registered_model(cfg.model_name)
    versions = client.search_model_versions(f"name = '{cfg.model_name}'")
    return {
        "aliases": {alias: str(version) for alias, version in model.aliases.items()},
        "tags": dict(model.tags or {}),
        "versions": {str(v.version): dict(v.tags or {}) for v in versions},
        "artifact_sources": {str(v.version): str(v.source) for v in versions},
    }


def scored_rows(profile: Profile) -> list[float]:
    """``driftline_scored_rows_total`` (summed over labels) of each replica, directly."""
    counts = []
    for url in profile.endpoints.replica_urls():
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            counts.append(-1.0)
            continue
        counts.append(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("driftline_scored_rows_total")
            )
        )
    return counts


def push_dvc(profile: Profile) -> dict[str, Any]:
    """``dvc push -r s3`` of what this checkout's DVC tracks, to the emulator's bucket.

    At the end of the loop: what DVC tracks (``dvc.lock``, ``.dvc`` files) is the local
    reproduction's (``make dvc-repro``), which the loop never changes, so one push after
    it is the point where the remote holds everything. A failed push is recorded (the
    timeline is still written), not raised.
    """
    from driftline.orchestration import dvc_remote

    bucket = BUCKETS["dvc"]
    try:
        pushed = dvc_remote.push(REPO, profile.env)
    except dvc_remote.DvcError as error:
        return {"remote": dvc_remote.REMOTE, "error": str(error)}
    objects = s3_objects(profile.endpoints.s3_endpoint, bucket)
    return {
        "remote": pushed.remote, "url": pushed.url, "pushed": pushed.pushed,
        "objects": len(objects), "seconds": pushed.seconds,
    }  # fmt: skip


def _on_s3(endpoint: str, uri: str) -> bool:
    """Whether the object ``s3://bucket/key`` exists in the emulator."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return key in s3_objects(endpoint, bucket)


def _dvc_line(dvc: dict[str, Any]) -> str:
    """The summary's DVC line."""
    if "error" in dvc:
        return f"DVC:         dvc push -r {dvc['remote']} FAILED: {dvc['error'].splitlines()[0]}"
    return (
        f"DVC:         dvc push -r {dvc['remote']} -> {dvc['url']}: {dvc['pushed']} files "
        f"pushed, {dvc['objects']} objects in the bucket"
    )


def print_summary(profile: Profile, payload: dict[str, Any]) -> None:
    """The closing summary: milestones, days, models, where each UI is."""
    from driftline.core.settings import get_settings
    from driftline.orchestration.demo import print_days, print_models

    say = _narrate()
    say("\n======== timeline (production profile) ========")
    say(f"drift scenario: {', '.join(payload['drift']) or 'none'}")
    for event in payload["events"]:
        say(f"  {event['day']}  {event['event']}")
    print_days(payload["days"])
    print_models(get_settings())
    e = profile.endpoints
    say(
        f"\nAirflow UI:  {e.airflow_url}  (scheduler on PostgreSQL {e.postgres.url('airflow')})\n"
        f"MLflow UI:   {e.mlflow_url}  (backend {e.postgres.url('mlflow')}, artifacts "
        f"s3://{BUCKETS['mlflow']} on {e.s3_endpoint})\n"
        f"scoring:     {e.nginx_url}  (nginx least_conn over "
        f"{', '.join(e.replica_urls())})\n"
        f"Redis:       127.0.0.1:{e.redis_port}   S3: {e.s3_endpoint}\n"
        f"Spark UI:    {e.spark_ui_url}  (standalone master {e.spark_master}, "
        f"{payload['spark']['applications']} applications: the feature jobs)\n"
        f"Feast:       registry {payload['feast_registry']} "
        f"({'on S3' if payload['feast_registry_on_s3'] else 'MISSING on S3'})\n"
        f"{_dvc_line(payload['dvc'])}\n"
        f"(all stop with this process; make demo PROFILE=prod KEEP=1 keeps them up)\n"
        f"finished in {payload['seconds']:.0f} s"
    )


def run_prod(
    options: ProdOptions, *, home: Path | None = None, keep: bool = False
) -> dict[str, Any]:
    """Start the profile, run the loop, print the timeline; the timeline payload.

    Args:
        options: The period and scale.
        home: The state folder (default ``$DRIFTLINE_HOME``).
        keep: Keep every component running after the loop until SIGTERM/Ctrl-C.

    Raises:
        ProdError: A step failed.
        ProcessStartError: A component did not start.
    """
    from driftline.orchestration.demo import narrate_to_stdout

    narrate_to_stdout()
    layout = ProdLayout(Path(home or os.environ.get("DRIFTLINE_HOME", ".driftline")).resolve())
    os.environ["DRIFTLINE_HOME"] = str(layout.home)
    started = time.monotonic()
    with components(layout, options) as profile:
        e = profile.endpoints
        profile.timeline.event(
            options.start, "components up", postgres=e.postgres.port, redis=e.redis_port,
            s3=e.s3_port, mlflow=e.mlflow_port, airflow=e.airflow_port,
            seconds=round(time.monotonic() - started),
        )  # fmt: skip
        config = simulator_config(options)
        load_history(options, config)
        profile.timeline.event(
            options.serve_from, "history loaded", first=options.start,
            days=len(list(Interval.parse(options.start, options.serve_from).days())),
        )  # fmt: skip
        for dag_id in ("ingest_validate_materialize", "monitor_drift", "retrain_promote"):
            profile.api.unpause(dag_id)
        stopped = stop_wall_clock_runs(profile, wait_s=60)
        profile.timeline.event(options.serve_from, "DAGs unpaused", wall_clock_runs_failed=stopped)
        first_champion(profile, options)
        with scoring(profile):
            profile.timeline.event(
                options.serve_from, "scoring up", nginx=e.nginx_port, replicas=list(e.replica_ports)
            )
            serve_days(profile, options, config)
            payload = {
                "drift": profile.timeline.drift,
                "events": profile.timeline.events,
                "days": profile.timeline.days,
                "endpoints": {
                    "airflow": e.airflow_url, "mlflow": e.mlflow_url, "nginx": e.nginx_url,
                    "replicas": e.replica_urls(), "s3": e.s3_endpoint,
                    "spark": e.spark_master, "spark_ui": e.spark_ui_url,
                    "redis": f"127.0.0.1:{e.redis_port}",
                },
                "replica_pids": [child.pid for child in profile.replicas],
                "replica_scored_rows": scored_rows(profile),
                "registry": registry_snapshot(),
                "artifacts_on_s3": len(s3_objects(e.s3_endpoint, BUCKETS["mlflow"])),
                "artifact_uri": profile.env["DRIFTLINE_MLFLOW_ARTIFACT_URI"],
                "feast_registry": FEAST_REGISTRY,
                "feast_registry_on_s3": _on_s3(e.s3_endpoint, FEAST_REGISTRY),
                "dvc": push_dvc(profile),
                "spark": spark_applications(e.spark_ui_url),
                "seconds": round(time.monotonic() - started, 1),
            }  # fmt: skip
            out = options.out or layout.root / "timeline.json"
            out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
            print_summary(profile, payload)
            _narrate()(f"\ntimeline JSON: {out}")
            while keep:  # until SIGTERM / Ctrl-C (the handlers stop every component)
                if profile.api.stack is not None:
                    profile.api.stack.check_alive()
                time.sleep(2)
        # The replicas flushed their prediction logs as they stopped; S3 is still up.
        payload["lake"] = export_lake(layout)
        out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        copied = payload["lake"]
        _narrate()(f"lake {LAKE_URI}: {copied['objects']} objects, copied to {copied['export']}")
    return payload
