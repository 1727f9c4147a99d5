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
this process (:mod:`driftline.orchestration.dag_runs`); the scoring service is a real
HTTP server in a child process this process owns
(:func:`driftline.orchestration.processes.scoring_service`): it is checked to be the one
answering on the port, and stopped however the loop ends. Every step is a DAG task or a
``driftline`` function: this module only sequences them. ``scripts/demo_loop.py`` is its
command line.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from driftline.core.interval import Interval
from driftline.core.settings import Settings, get_settings
from driftline.data.features import first_complete_day
from driftline.orchestration import assets, dag_runs
from driftline.orchestration.processes import get_json, scoring_service
from driftline.simulator import DriftScenario, SimulatorConfig, write_landing


class DemoError(RuntimeError):
    """The loop cannot go on (the message says which step failed)."""


#: ``make demo``'s period: 14 days of history fill the 14-day look-back features, so the
#: first model trains from :data:`TRAIN_START` on complete features only; it is served
#: from :data:`SERVE_FROM`, and both drifts start on :data:`DRIFT_DAY`.
START = date(2025, 12, 18)
TRAIN_START = date(2026, 1, 1)
SERVE_FROM = date(2026, 1, 17)
END = date(2026, 1, 31)
DRIFT_DAY = date(2026, 1, 20)
DRIFT: tuple[str, ...] = (f"new_fraud_pattern@{DRIFT_DAY}", f"covariate_shift@{DRIFT_DAY}")


#: The demo's narration (the lines ``make demo`` shows); :func:`narrate_to_stdout` sends
#: it to the terminal.
NARRATION = logging.getLogger("driftline.demo.narration")


def narrate_to_stdout() -> None:
    """Write the narration, unformatted, to the real stdout.

    ``dag.test`` redirects (and indents) ``sys.stdout``, so the handler holds
    ``sys.__stdout__``; the narration does not propagate to the root logger, which
    Airflow configures.
    """
    if not any(h.get_name() == "driftline-narration" for h in NARRATION.handlers):
        handler = logging.StreamHandler(sys.__stdout__)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.set_name("driftline-narration")
        NARRATION.addHandler(handler)
    NARRATION.setLevel(logging.INFO)
    NARRATION.propagate = False


def say(*args: Any) -> None:
    """One narration line (the words of ``args``, as ``print`` joins them)."""
    NARRATION.info(" ".join(str(arg) for arg in args))


def _say_line(line: str) -> None:
    say(line)


@dataclass(frozen=True)
class LoopOptions:
    """What a closed loop covers and how hard it trains, whatever runs it.

    The defaults are ``make demo``'s. :class:`DemoOptions` (the embedded loop) and
    :class:`driftline.orchestration.prod.ProdOptions` (the production profile) add
    what only they have.

    Attributes:
        start: First simulated day: the simulator's anchor and, declared as
            ``DRIFTLINE_DATA_START``, the first day of data.
        serve_from: First served day (the first model trains on the days before).
        end: Day after the last one.
        train_start: First training day of the first model; no earlier than the first
            day with complete look-back features (``start`` + 14 days,
            :func:`~driftline.data.features.first_complete_day`).
        drift: Drift scenarios, ``NAME[:INTENSITY]@YYYY-MM-DD`` (none: no drift).
        rows: Transactions per day.
        fraud_rate: Simulator share of fraud.
        trials: Tuning trials of the first training (``make demo``: of every training).
        workers: Tuning workers of the first training (``make demo``: of every training).
        out: Timeline JSON (default: ``timeline.json`` in the loop's state folder).
    """

    start: date = START
    serve_from: date = SERVE_FROM
    end: date = END
    train_start: date = TRAIN_START
    drift: tuple[str, ...] = DRIFT
    rows: int = 4000
    fraud_rate: float = 0.02
    trials: int = 8
    workers: int = 2
    out: Path | None = None


@dataclass(frozen=True)
class DemoOptions(LoopOptions):
    """The embedded loop's options (``make demo``): :class:`LoopOptions` and its port.

    The timeline JSON defaults to ``$DRIFTLINE_HOME/demo/timeline.json``.

    Attributes:
        port: Port of the scoring service.
    """

    port: int = 8765


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
        say(f"==> {day}  {what}  {json.dumps(details, default=str)}")


# --------------------------------------------------------------------------------------
# Airflow
# --------------------------------------------------------------------------------------


def run_daily(dag_id: str, day: date) -> Any:
    """One run of a daily DAG for ``[day, day + 1)``; returns the DagRun."""
    return dag_runs.run_daily(dag_id, day, say=_say_line)


def run_manual(dag_id: str, conf: dict[str, Any]) -> Any:
    """One manual run of ``dag_id`` with ``conf``; returns the DagRun."""
    return dag_runs.run_manual(dag_id, conf, say=_say_line)


def retrain_events(run_id: str) -> list[dict[str, Any]]:
    """Extras of the retrain-request asset events the DAG run ``run_id`` emitted."""
    return dag_runs.asset_event_extras(assets.RETRAIN_REQUESTS, run_id)


# --------------------------------------------------------------------------------------
# Scoring service
# --------------------------------------------------------------------------------------


def serving(port: int) -> dict[str, Any]:
    """The service's ``/ready`` body (empty when it does not answer)."""
    answer = get_json(f"http://127.0.0.1:{port}/ready", timeout_s=5.0)
    return answer[1] if answer is not None else {}


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
    say(
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
    # monitor_drift is scheduled on the ingest DAG's asset; a manual run names its day.
    dag_run = dag_runs.run_daily("monitor_drift", day, say=_say_line, conf={"day": str(day)})
    check = dag_runs.task_result(dag_run, "check_drift") or {}
    drift = check.get("drift") or {}
    timeline.days.setdefault(str(day), {})["monitor"] = monitor_entry(str(dag_run.state), check)
    if drift.get("drifted"):
        timeline.event(day, "drift detected", reason=drift_reason(drift))
    requests = retrain_events(dag_run.run_id)
    if requests:
        timeline.event(day, "retrain requested", **requests[-1])
    return requests[-1] if requests else None


def monitor_entry(state: str, check: dict[str, Any]) -> dict[str, Any]:
    """A day's ``monitor_drift`` run on the timeline, from its ``check_drift`` result."""
    drift = check.get("drift") or {}
    return {
        "state": state,
        "drifted": drift.get("drifted"),
        "drifted_columns": drift.get("drifted_columns"),
        "drift_share": drift.get("drift_share"),
        "score_psi": drift.get("prediction_drift_score"),
        "baseline_share": (drift.get("calibration") or {}).get("baseline_share"),
        "fallback_rows": drift.get("fallback_rows", 0),
        "fresh": _fresh_summary(drift.get("consistency") or {}),
        "performance": drift.get("performance_check") or {},
        "decision": (check.get("decision") or {}).get("reason"),
        "report": drift.get("report_html"),
    }


def _fresh_summary(consistency: dict[str, Any]) -> dict[str, Any]:
    """The day's served fresh features against the offline job's (online = offline)."""
    return {
        key: consistency.get(key) for key in ("status", "rows", "identical", "share", "flagged")
    }


def drift_reason(drift: dict[str, Any]) -> str:
    """One line on why ``check_drift`` found drift."""
    parts = []
    if drift.get("dataset_drift"):
        parts.append(f"inputs {drift.get('drifted_columns')}")
    if drift.get("prediction_drift"):
        parts.append(f"score PSI {drift.get('prediction_drift_score'):.3f}")
    if drift.get("performance_drift"):
        check = drift["performance_check"]
        parts.append(
            f"served PR-AUC {check['pr_auc']:.3f} significantly < {check['floor']:.3f} "
            f"on {check['first_day']}..{check['last_day']}"
        )
    return "; ".join(parts)


def retrain(
    request: dict[str, Any], options: DemoOptions, traffic: CanaryTraffic, timeline: Timeline
) -> None:
    """Run ``retrain_promote`` for ``request`` while ``traffic`` feeds the canary."""
    traffic.start()
    conf = {**request, "trials": options.trials, "workers": options.workers}
    try:
        dag_run = run_manual("retrain_promote", conf)
    finally:
        traffic.stop.set()
        traffic.join()
    record_rollout(dag_run, request["window_end"], timeline)


def record_rollout(dag_run: Any, day: str, timeline: Timeline) -> dict[str, Any] | None:
    """Narrate a ``retrain_promote`` run from its tasks' results; its final decision."""
    gate = dag_runs.task_result(dag_run, "staging_gate")
    trained = dag_runs.task_result(dag_run, "train_candidate") or {}
    if gate is None:
        timeline.event(
            day, "retrain rejected", version=trained.get("version"), state=str(dag_run.state)
        )
        return None
    timeline.event(day, "staging gate passed", version=gate["version"], reason=gate["reason"])
    canary = dag_runs.task_result(dag_run, "start_canary") or {}
    if canary.get("mode") == "canary":
        timeline.event(
            day, "canary started", version=canary["version"], champion=canary["champion"]
        )
    report = dag_runs.task_result(dag_run, "canary_analysis")
    if report:
        timeline.event(day, f"canary analysis: {report['verdict']}", reasons=report["reasons"])
    decision: dict[str, Any] = dag_runs.task_result(dag_run, "promote_or_rollback") or {}
    timeline.event(
        day,
        "promoted to champion" if decision.get("action") == "promote" else "canary rolled back",
        version=decision.get("version"),
        previous=decision.get("previous"),
    )
    return decision


def serve_days(options: DemoOptions, config: SimulatorConfig, timeline: Timeline) -> None:
    """Days from ``serve_from`` to ``end``: replay, ingest, monitor, maybe retrain.

    The scoring service is a child of this process for exactly this stretch: it is
    stopped (its whole process group) when the days are done or anything fails.
    """
    settings = get_settings()
    port = options.port
    log_path = settings.home / "demo" / "serve.log"
    with scoring_service(port, log_path=log_path, port_hint="--port (make demo DEMO_PORT=...)"):
        # /ready's body includes the server's instance id, pid and state folder.
        timeline.event(options.serve_from, "scoring service up", port=port, **serving(port))
        replayed: dict[date, dict[str, Any]] = {}
        for day in Interval.parse(options.serve_from, options.end).days():
            served = replayed.pop(day, None) or replay(day, config, settings, port)
            timeline.days.setdefault(str(day), {})["served"] = served
            run_daily("ingest_validate_materialize", day)
            request = monitor(day, timeline)
            following = day + timedelta(days=1)
            if request is not None and following < options.end:
                traffic = CanaryTraffic(following, config, settings, port)
                retrain(request, options, traffic, timeline)
                if traffic.result is not None:
                    replayed[following] = traffic.result


def first_champion(options: DemoOptions, timeline: Timeline) -> None:
    """Backfill the history through the ingest DAG and crown the first model."""
    history = Interval.parse(options.start, options.serve_from)
    for day in history.days():
        dag_run = run_daily("ingest_validate_materialize", day)
        if str(dag_run.state) != "success":
            raise DemoError(f"ingest of {day} failed")
    timeline.event(
        options.serve_from,
        "history ingested",
        first=options.start,
        days=len(list(history.days())),
    )
    conf = {
        "window_start": options.train_start.isoformat(),
        "window_end": options.serve_from.isoformat(),
        "trials": options.trials,
        "workers": options.workers,
    }
    dag_run = run_manual("retrain_promote", conf)
    if record_rollout(dag_run, options.serve_from.isoformat(), timeline) is None:
        raise DemoError("the first model did not pass its gates; see the Airflow task logs")


def check_period(options: DemoOptions, settings: Settings) -> None:
    """Refuse a period whose first model would train on incomplete look-back features.

    Raises:
        DemoError: ``data_start`` is not ``options.start``, or ``train_start`` comes
            before the first day with complete look-back features.
    """
    if settings.data_start != options.start:
        raise DemoError(
            f"the first day of data (DRIFTLINE_DATA_START={settings.data_start}) must be "
            f"the first simulated day {options.start}"
        )
    complete = first_complete_day(settings)
    if complete is not None and options.train_start < complete:
        raise DemoError(
            f"--train-start {options.train_start} is before {complete}, the first day with "
            f"complete look-back features (data_start {options.start} + the look-back)"
        )
    if not options.start < options.train_start < options.serve_from < options.end:
        raise DemoError("the days must run start < train_start < serve_from < end")


def simulate(options: DemoOptions) -> SimulatorConfig:
    """Write the landing files of the whole period; return the simulator config.

    The first simulated day is the simulator's anchor (its population derives from it
    and the seed); ``driftline replay`` of a demo day needs the same anchor
    (``DRIFTLINE_SIMULATION_START``).
    """
    settings = get_settings()
    scenarios = tuple(DriftScenario.parse(item) for item in options.drift)
    config = SimulatorConfig(
        seed=settings.seed,
        rows_per_day=options.rows,
        fraud_rate=options.fraud_rate,
        anchor=options.start,
        scenarios=scenarios,
    )
    write_landing(config, Interval.parse(options.start, options.end), settings.lake_uri)
    return config


# --------------------------------------------------------------------------------------
# The summary
# --------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_days(days: dict[str, dict[str, Any]]) -> None:
    """One line per served day: traffic, drift, fresh features and the decision.

    ``fresh=off`` is the share of the day's served rows whose fresh features (computed
    at request time from the event state) equal the offline job's for the same
    transactions.
    """
    say(
        f"\n{'day':<11} {'scored':>6} {'canary':>6} {'share':>5} {'PSI':>6} "
        f"{'fresh=off':>9} {'PR-AUC@matured':>15}  decision"
    )
    for day, info in sorted(days.items()):
        served, monitored = info.get("served") or {}, info.get("monitor") or {}
        performance = monitored.get("performance") or {}
        verdict = {"ok": "ok", "degraded": "DROP", "insufficient_evidence": "n/e"}
        matured = (
            f"{_fmt(performance.get('pr_auc'))} ({performance.get('last_day', '')[5:]}) "
            f"{verdict.get(performance.get('verdict', ''), '')}"
            if performance
            else "-"
        )
        say(
            f"{day:<11} {served.get('ok', 0):>6} {served.get('variants', {}).get('canary', 0):>6} "
            f"{_fmt(monitored.get('drift_share'), 2):>5} {_fmt(monitored.get('score_psi')):>6} "
            f"{_fmt((monitored.get('fresh') or {}).get('share')):>9} "
            f"{matured:>15}  {str(monitored.get('decision', ''))[:90]}"
        )


def print_models(settings: Settings) -> None:
    """Each version: aliases, holdout PR-AUC, and the champion it was compared with."""
    from driftline.lifecycle import registry

    client = registry.client(settings)
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(settings.model_name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    say("\nmodel versions (holdout PR-AUC of the candidate and of the champion of the day,")
    say("on the same most recent labelled days):")
    for version in sorted(
        client.search_model_versions(f"name = '{settings.model_name}'"),
        key=lambda v: int(v.version),
    ):
        tags = version.tags or {}
        decision = tags.get("decision.promote") or tags.get("decision.rollback") or ""
        say(
            f"  v{version.version} [{', '.join(aliases.get(str(version.version), [])) or '-'}] "
            f"trained on {tags.get('data_interval')}: "
            f"PR-AUC {tags.get('candidate.pr_auc', '-')[:5]}"
            f" vs champion v{tags.get('champion.version', '-')} "
            f"{tags.get('champion.pr_auc', '-')[:5]}\n      {decision[:150]}"
        )


def print_timeline(payload: dict[str, Any], settings: Settings) -> None:
    """The demo's closing summary: milestones, days, models, where to look."""
    say("\n======== timeline ========")
    say(f"drift scenario: {', '.join(payload['drift']) or 'none'}")
    for event in payload["events"]:
        say(f"  {event['day']}  {event['event']}")
    print_days(payload["days"])
    print_models(settings)
    reports = f"{settings.lake_uri.rstrip('/')}/monitoring/reports"
    say(
        f"\ndrift reports: {reports}/dt=YYYY-MM-DD/drift_report.html\n"
        "Airflow UI:    make airflow-ui   (http://localhost:8080: DAG runs, task logs)\n"
        "MLflow UI:     make mlflow-ui    (http://localhost:5000: runs, registry, tags)\n"
        f"finished in {payload['seconds']:.0f} s"
    )


def run_demo(options: DemoOptions) -> Path:
    """Run the loop, print the timeline, write it as JSON; the JSON's path.

    Raises:
        DemoError: The period is refused (:func:`check_period`) or a step failed.
        driftline.orchestration.processes.ProcessStartError: The scoring service did not
            start (port taken, crash, another server answering).
    """
    check_period(options, get_settings())
    timeline = Timeline(drift=list(options.drift))
    started = time.monotonic()
    config = simulate(options)
    timeline.event(
        options.start,
        "simulated",
        until=options.end,
        drift=list(options.drift),
        rows_per_day=options.rows,
    )
    first_champion(options, timeline)
    serve_days(options, config, timeline)
    out = options.out or get_settings().home / "demo" / "timeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "drift": timeline.drift,
        "events": timeline.events,
        "days": timeline.days,
        "seconds": round(time.monotonic() - started, 1),
    }
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print_timeline(payload, get_settings())
    say(f"\ntimeline JSON: {out}")
    return out
