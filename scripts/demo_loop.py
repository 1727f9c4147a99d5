"""The closed loop of ``make demo``: backfill, first champion, serving, drift, retrain, canary.

It plays the parts a scheduler and the outside world play in production, on one laptop:

1. simulates the whole period (with the drift scenario) into the landing zone;
2. backfills ``ingest_validate_materialize`` over the history;
3. runs ``retrain_promote`` by hand on the history: the first model becomes ``champion``;
4. starts ``driftline serve`` and, for each following day, replays that day's
   transactions to it, runs the ingest DAG for the day (its chargebacks arrive), then
   ``monitor_drift``;
5. when ``monitor_drift`` emits a retrain request on ``driftline://drift/retrain-requests``
   (read back from Airflow's asset events, as the scheduler would), it runs
   ``retrain_promote`` with that request while the next day's traffic is replayed, so the
   canary sees live requests and the DAG's canary analysis can decide;
6. prints the timeline and writes it as JSON.

DAG runs are ``dag.test()`` runs on the embedded SQLite metadata DB (no scheduler), in
this process; the scoring service is a real HTTP server in a child process. Every step
is a DAG task or a ``driftline`` function: this script only sequences them.

Usage: python scripts/demo_loop.py --start 2026-01-01 --serve-from 2026-01-17 \\
    --end 2026-01-30 --drift new_fraud_pattern@2026-01-20 [--rows 4000 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_dag import load_dag

from driftline.core.interval import Interval
from driftline.core.settings import Settings, get_settings
from driftline.simulator.simulate import DriftScenario, SimulatorConfig, write_landing

RETRAIN_REQUESTS = "driftline://drift/retrain-requests"


def _say(*args: Any) -> None:
    """Print to the real stdout: ``dag.test`` redirects (and indents) ``sys.stdout``."""
    print(*args, file=sys.__stdout__, flush=True)


@dataclass
class Timeline:
    """What happened, day by day, plus the loop's milestones."""

    drift: list[str]
    days: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, day: date | str, what: str, **details: Any) -> None:
        """Record and print a milestone."""
        entry = {"day": str(day), "event": what, **details}
        self.events.append(entry)
        _say(f"==> {day}  {what}  {json.dumps(details, default=str)}")


# --------------------------------------------------------------------------------------
# Airflow
# --------------------------------------------------------------------------------------


def run_daily(dag_id: str, day: date) -> Any:
    """One run of a daily DAG for ``[day, day + 1)``; returns the DagRun."""
    logical = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    dag_run = load_dag(dag_id).test(logical_date=logical, run_after=logical)
    _say(f"{dag_id} {day}: {dag_run.state}")
    return dag_run


def run_manual(dag_id: str, conf: dict[str, Any]) -> Any:
    """One manual run of ``dag_id`` with ``conf``; returns the DagRun."""
    dag_run = load_dag(dag_id).test(run_conf=conf)
    _say(f"{dag_id} manual run: {dag_run.state}")
    return dag_run


def retrain_events(run_id: str) -> list[dict[str, Any]]:
    """Extras of the retrain-request asset events the DAG run ``run_id`` emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == RETRAIN_REQUESTS, AssetEvent.source_run_id == run_id)
        )
        return [dict(event.extra or {}) for event in session.scalars(query)]


def task_xcom(dag_run: Any, task_id: str) -> Any:
    """The return value of ``task_id`` in ``dag_run`` (None if it did not run)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(XComModel.value).where(
            XComModel.dag_id == dag_run.dag_id,
            XComModel.run_id == dag_run.run_id,
            XComModel.task_id == task_id,
            XComModel.key == "return_value",
        )
        value = session.scalars(query).first()
    return json.loads(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------------------
# Scoring service
# --------------------------------------------------------------------------------------


def start_service(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``driftline serve`` in a child process; returns once it is ready."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    binary = Path(sys.executable).with_name("driftline")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [str(binary), "serve", "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"driftline serve exited with {process.returncode}; see {log_path}")
        if serving(port).get("ready"):
            return process
        time.sleep(1)
    process.terminate()
    raise SystemExit(f"driftline serve was not ready within 180 s; see {log_path}")


def serving(port: int) -> dict[str, Any]:
    """The service's ``/ready`` body (empty when it does not answer)."""
    try:
        answer: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).json()
        return answer
    except httpx.HTTPError:
        return {}


def replay(day: date, config: SimulatorConfig, settings: Settings, port: int) -> dict[str, Any]:
    """Send the day's transactions to the service in batches; returns the replay result."""
    from driftline.serving.app import api_keys
    from driftline.serving.replay import replay_day

    result = replay_day(
        day,
        base_url=f"http://127.0.0.1:{port}",
        api_key=api_keys(settings)[0],
        rate=0,
        config=config,
        batch_size=100,
    ).to_dict()
    _say(
        f"replay {day}: {result['ok']}/{result['sent']} scored, failed {result['failed']}, "
        f"variants {result['variants']}, versions {result['model_versions']}"
    )
    return result


class CanaryTraffic(threading.Thread):
    """Replays ``day`` once the service serves a canary (or gives up when stopped)."""

    def __init__(self, day: date, config: SimulatorConfig, settings: Settings, port: int):
        """Prepare; :meth:`start` begins waiting for the canary."""
        super().__init__(name="canary-traffic", daemon=True)
        self.day, self.config, self.settings, self.port = day, config, settings, port
        self.stop = threading.Event()
        self.result: dict[str, Any] | None = None
        self.canary: str | None = None

    def run(self) -> None:
        """Wait for a canary version on ``/ready``, then replay the day."""
        while not self.stop.wait(1.0):
            canary = serving(self.port).get("canary")
            if canary:
                self.canary = str(canary)
                self.result = replay(self.day, self.config, self.settings, self.port)
                return


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def monitor(day: date, timeline: Timeline) -> dict[str, Any] | None:
    """Run ``monitor_drift`` for ``day``; return the retrain request it emitted, if any."""
    dag_run = run_daily("monitor_drift", day)
    check = task_xcom(dag_run, "check_drift") or {}
    drift = check.get("drift") or {}
    performance = drift.get("performance_check") or {}
    timeline.days.setdefault(str(day), {})["monitor"] = {
        "state": str(dag_run.state),
        "drifted": drift.get("drifted"),
        "drifted_columns": drift.get("drifted_columns"),
        "drift_share": drift.get("drift_share"),
        "score_psi": drift.get("prediction_drift_score"),
        "performance": performance,
        "decision": (check.get("decision") or {}).get("reason"),
        "report": drift.get("report_html"),
    }
    if drift.get("drifted"):
        timeline.event(day, "drift detected", reason=_drift_reason(drift))
    requests = retrain_events(dag_run.run_id)
    if requests:
        timeline.event(day, "retrain requested", **requests[-1])
    return requests[-1] if requests else None


def _drift_reason(drift: dict[str, Any]) -> str:
    parts = []
    if drift.get("dataset_drift"):
        parts.append(f"inputs {drift.get('drifted_columns')}")
    if drift.get("prediction_drift"):
        parts.append(f"score PSI {drift.get('prediction_drift_score'):.3f}")
    if drift.get("performance_drift"):
        check = drift["performance_check"]
        parts.append(
            f"served PR-AUC {check['pr_auc']:.3f} < {check['floor']:.3f} "
            f"on {check['first_day']}..{check['last_day']}"
        )
    return "; ".join(parts)


def retrain(
    request: dict[str, Any], args: argparse.Namespace, traffic: CanaryTraffic, timeline: Timeline
) -> None:
    """Run ``retrain_promote`` for ``request`` while ``traffic`` feeds the canary."""
    traffic.start()
    conf = {**request, "trials": args.trials, "workers": args.workers}
    try:
        dag_run = run_manual("retrain_promote", conf)
    finally:
        traffic.stop.set()
        traffic.join()
    _record_rollout(dag_run, request["window_end"], timeline)


def _record_rollout(dag_run: Any, day: str, timeline: Timeline) -> dict[str, Any] | None:
    gate = task_xcom(dag_run, "staging_gate")
    trained = task_xcom(dag_run, "train_candidate") or {}
    if gate is None:
        timeline.event(
            day, "retrain rejected", version=trained.get("version"), state=str(dag_run.state)
        )
        return None
    timeline.event(day, "staging gate passed", version=gate["version"], reason=gate["reason"])
    canary = task_xcom(dag_run, "start_canary") or {}
    if canary.get("mode") == "canary":
        timeline.event(
            day, "canary started", version=canary["version"], champion=canary["champion"]
        )
    report = task_xcom(dag_run, "canary_analysis")
    if report:
        timeline.event(day, f"canary analysis: {report['verdict']}", reasons=report["reasons"])
    decision = task_xcom(dag_run, "promote_or_rollback") or {}
    timeline.event(
        day,
        "promoted to champion" if decision.get("action") == "promote" else "canary rolled back",
        version=decision.get("version"),
        previous=decision.get("previous"),
    )
    return decision


def serve_days(args: argparse.Namespace, config: SimulatorConfig, timeline: Timeline) -> None:
    """Days from ``--serve-from`` to ``--end``: replay, ingest, monitor, maybe retrain."""
    settings = get_settings()
    service = start_service(args.port, settings.home / "demo" / "serve.log")
    timeline.event(args.serve_from, "scoring service up", port=args.port, **serving(args.port))
    replayed: dict[date, dict[str, Any]] = {}
    try:
        for day in Interval.parse(args.serve_from, args.end).days():
            served = replayed.pop(day, None) or replay(day, config, settings, args.port)
            timeline.days.setdefault(str(day), {})["served"] = served
            run_daily("ingest_validate_materialize", day)
            request = monitor(day, timeline)
            following = day + timedelta(days=1)
            if request is not None and following < args.end:
                traffic = CanaryTraffic(following, config, settings, args.port)
                retrain(request, args, traffic, timeline)
                if traffic.result is not None:
                    replayed[following] = traffic.result
    finally:
        service.terminate()
        service.wait(timeout=30)


def first_champion(args: argparse.Namespace, timeline: Timeline) -> None:
    """Backfill the history through the ingest DAG and crown the first model."""
    history = Interval.parse(args.start, args.serve_from)
    for day in history.days():
        dag_run = run_daily("ingest_validate_materialize", day)
        if str(dag_run.state) != "success":
            raise SystemExit(f"ingest of {day} failed")
    timeline.event(
        args.serve_from, "history ingested", first=args.start, days=len(list(history.days()))
    )
    conf = {
        "window_start": args.train_start.isoformat(),
        "window_end": args.serve_from.isoformat(),
        "trials": args.trials,
        "workers": args.workers,
    }
    dag_run = run_manual("retrain_promote", conf)
    if _record_rollout(dag_run, args.serve_from.isoformat(), timeline) is None:
        raise SystemExit("the first model did not pass its gates; see the Airflow task logs")


def simulate(args: argparse.Namespace) -> SimulatorConfig:
    """Write the landing files of the whole period; return the simulator config."""
    settings = get_settings()
    scenarios = tuple(
        DriftScenario(name, date.fromisoformat(day))  # type: ignore[arg-type]
        for name, day in (item.split("@", 1) for item in args.drift)
    )
    config = SimulatorConfig(
        seed=settings.seed,
        rows_per_day=args.rows,
        fraud_rate=args.fraud_rate,
        anchor=settings.simulation_start,
        scenarios=scenarios,
    )
    write_landing(config, Interval.parse(args.start, args.end), settings.lake_uri)
    return config


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    day = date.fromisoformat
    parser.add_argument("--start", type=day, required=True, help="First simulated day.")
    parser.add_argument("--serve-from", type=day, required=True, help="First served day.")
    parser.add_argument("--end", type=day, required=True, help="Day after the last one.")
    parser.add_argument("--train-start", type=day, required=True, help="First training day.")
    parser.add_argument("--drift", action="append", default=[], help="NAME@YYYY-MM-DD.")
    parser.add_argument("--rows", type=int, default=4000, help="Transactions per day.")
    parser.add_argument("--fraud-rate", type=float, default=0.02)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=None, help="Timeline JSON.")
    return parser.parse_args()


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_days(days: dict[str, dict[str, Any]]) -> None:
    """One line per served day: traffic, drift and the decision."""
    _say(
        f"\n{'day':<11} {'scored':>6} {'canary':>6} {'share':>5} {'PSI':>6} "
        f"{'PR-AUC@matured':>15}  decision"
    )
    for day, info in sorted(days.items()):
        served, monitor = info.get("served") or {}, info.get("monitor") or {}
        performance = monitor.get("performance") or {}
        matured = (
            f"{_fmt(performance.get('pr_auc'))} ({performance.get('last_day', '')[5:]})"
            if performance
            else "-"
        )
        _say(
            f"{day:<11} {served.get('ok', 0):>6} {served.get('variants', {}).get('canary', 0):>6} "
            f"{_fmt(monitor.get('drift_share'), 2):>5} {_fmt(monitor.get('score_psi')):>6} "
            f"{matured:>15}  {str(monitor.get('decision', ''))[:90]}"
        )


def print_models(settings: Settings) -> None:
    """Each version: aliases, holdout PR-AUC, and the champion it was compared with."""
    from driftline.lifecycle import registry

    client = registry.client(settings)
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(settings.model_name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    _say("\nmodel versions (holdout PR-AUC of the candidate and of the champion of the day,")
    _say("on the same most recent labelled days):")
    for version in sorted(
        client.search_model_versions(f"name = '{settings.model_name}'"),
        key=lambda v: int(v.version),
    ):
        tags = version.tags or {}
        decision = tags.get("decision.promote") or tags.get("decision.rollback") or ""
        _say(
            f"  v{version.version} [{', '.join(aliases.get(str(version.version), [])) or '-'}] "
            f"trained on {tags.get('data_interval')}: "
            f"PR-AUC {tags.get('candidate.pr_auc', '-')[:5]}"
            f" vs champion v{tags.get('champion.version', '-')} "
            f"{tags.get('champion.pr_auc', '-')[:5]}\n      {decision[:150]}"
        )


def print_timeline(payload: dict[str, Any], settings: Settings) -> None:
    """The demo's closing summary: milestones, days, models, where to look."""
    _say("\n======== timeline ========")
    _say(f"drift scenario: {', '.join(payload['drift']) or 'none'}")
    for event in payload["events"]:
        _say(f"  {event['day']}  {event['event']}")
    print_days(payload["days"])
    print_models(settings)
    reports = settings.home / "monitoring" / "reports"
    _say(
        f"\ndrift reports: {reports}/dt=YYYY-MM-DD/drift_report.html\n"
        "Airflow UI:    make airflow-ui   (http://localhost:8080: DAG runs, task logs)\n"
        "MLflow UI:     make mlflow-ui    (http://localhost:5000: runs, registry, tags)\n"
        f"finished in {payload['seconds']:.0f} s"
    )


def main() -> int:
    """Run the loop, print the timeline, write it as JSON."""
    args = parse_args()
    timeline = Timeline(drift=list(args.drift))
    started = time.monotonic()
    config = simulate(args)
    timeline.event(
        args.start, "simulated", until=args.end, drift=args.drift, rows_per_day=args.rows
    )
    first_champion(args, timeline)
    serve_days(args, config, timeline)
    out = args.out or get_settings().home / "demo" / "timeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "drift": timeline.drift,
        "events": timeline.events,
        "days": timeline.days,
        "seconds": round(time.monotonic() - started, 1),
    }
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print_timeline(payload, get_settings())
    _say(f"\ntimeline JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
