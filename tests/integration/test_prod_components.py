"""The production profile's components one by one (``driftline.orchestration.prod``).

Without the loop (that is ``make test-prod``): Redis answers and stops, the S3 emulator
gets its buckets, nginx balances two upstreams with ``least_conn`` and never sends a
POST twice, ports are recorded and reused, and a SIGTERM to the owner stops every
component it started.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.orchestration import prod
from driftline.orchestration.processes import free_port, group_alive

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server not installed (make prod-deps)"
)
needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx not installed (make prod-deps)",
)


class _Upstream(http.server.BaseHTTPRequestHandler):
    """Answers every request with the port it listens on; counts POST bodies."""

    seen: Counter[str] = Counter()

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Upstream.seen[body.decode()] += 1
        self._answer()

    def _answer(self) -> None:
        payload = json.dumps({"port": self.server.server_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def upstreams() -> Iterator[list[int]]:
    """Two HTTP servers on loopback in threads; their ports."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield [s.server_address[1] for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


@needs_redis
def test_redis_answers_and_is_gone_after(tmp_path: Path) -> None:
    layout = prod.ProdLayout(tmp_path)
    port = free_port()
    with prod.redis_server(layout, port) as child:
        assert prod.redis_ping(port)()
    assert not group_alive(child.pgid)
    assert not prod.redis_ping(port)()


def test_s3_emulator_gets_the_buckets(tmp_path: Path) -> None:
    layout = prod.ProdLayout(tmp_path)
    port = free_port()
    with prod.s3_server(layout, port):
        endpoint = f"http://127.0.0.1:{port}"
        prod.create_buckets(endpoint)  # idempotent
        for bucket in prod.BUCKETS.values():
            assert prod.s3_objects(endpoint, bucket) == []


@needs_nginx
def test_nginx_balances_both_upstreams_and_sends_each_post_once(
    tmp_path: Path, upstreams: list[int]
) -> None:
    layout = prod.ProdLayout(tmp_path)
    port = free_port()
    _Upstream.seen.clear()
    with prod.nginx(layout, port, upstreams, max_body=1_000_000) as child:
        config = (layout.root / "nginx" / "nginx.conf").read_text()
        assert "least_conn;" in config and f"listen 127.0.0.1:{port};" in config
        answered: Counter[int] = Counter()
        for n in range(40):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/score", data=f"row-{n}".encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                answered[json.loads(reply.read())["port"]] += 1
    assert set(answered) == set(upstreams), answered  # both replicas got traffic
    assert min(answered.values()) >= 10, answered
    assert len(_Upstream.seen) == 40, _Upstream.seen
    assert set(_Upstream.seen.values()) == {1}, _Upstream.seen  # no POST sent twice
    assert not group_alive(child.pgid)


def test_ports_are_recorded_and_reused(tmp_path: Path) -> None:
    layout = prod.ProdLayout(tmp_path)
    first = prod.choose_ports(layout)
    assert set(first) == set(prod.COMPONENTS) and len(set(first.values())) == len(first)
    assert prod.choose_ports(layout) == first
    assert json.loads((layout.root / "ports.json").read_text()) == first


@needs_redis
def test_sigterm_to_the_owner_stops_what_it_started(tmp_path: Path) -> None:
    port = free_port()
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from driftline.orchestration import prod\n"
        f"with prod.redis_server(prod.ProdLayout(Path({str(tmp_path)!r})), {port}) as child:\n"
        "    print(child.pgid, flush=True)\n"
        "    time.sleep(120)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    pgid = int(owner.stdout.readline())
    assert group_alive(pgid) and prod.redis_ping(port)()
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pgid)
    assert not prod.redis_ping(port)()


def test_a_spark_standalone_cluster_runs_a_session_of_get_spark(tmp_path: Path) -> None:
    layout = prod.ProdLayout(tmp_path)
    port, ui_port = free_port(), free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    job = (
        "import pyarrow as pa\n"
        "from driftline.data.spark import get_spark, stop_spark\n"
        "spark = get_spark()\n"
        "frame = spark.createDataFrame(pa.table({'day': [i % 3 for i in range(300)]}))\n"
        "print(spark.sparkContext.master, frame.groupBy('day').count().count(), flush=True)\n"
        "stop_spark()  # frees the cores: the next application gets them\n"
        "print(get_spark().range(5).count(), flush=True)\n"
    )
    with prod.spark_cluster(layout, port, ui_port) as master:
        assert master == f"spark://127.0.0.1:{port}"
        before = prod.spark_applications(ui)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
            "DRIFTLINE_HOME": str(tmp_path / "home"),
            "DRIFTLINE_SPARK_MASTER": master,
        }
        done = subprocess.run(
            [sys.executable, "-c", job], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.split() == [master, "3", "5"]
        after = prod.spark_applications(ui)
    assert before["alive_workers"] == 1 and before["applications"] == 0
    assert after["applications"] == 2 and after["states"] == {"FINISHED": 2}, after
    assert after["master"] == master and after["names"] == ["driftline"]
    assert prod.spark_applications(ui)["master"] is None  # stopped with its worker
