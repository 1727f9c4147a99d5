"""The ``driftline`` command line: one command per stage.

DVC stages and people call these; Airflow tasks and Kubeflow components call the
same functions directly. Every command takes its data interval explicitly
(``--start``/``--end``, end exclusive; ``--end`` defaults to one day later).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console

from driftline.core.interval import Interval
from driftline.core.settings import get_settings

app = typer.Typer(
    help="driftline: DAG-orchestrated MLOps for card-fraud scoring.", no_args_is_help=True
)
console = Console(stderr=True)

Start = Annotated[str, typer.Option("--start", help="First day of the interval (YYYY-MM-DD).")]
End = Annotated[
    str | None, typer.Option("--end", help="Day after the last day (exclusive). Default: start+1.")
]
Dataset = Annotated[str, typer.Option("--dataset", help="transactions or labels.")]
Cutoff = Annotated[str, typer.Option("--end", help="Label cut-off: day after the window.")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Configure logging for the command (never at import)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextmanager
def _days(label: str, interval: Interval) -> Iterator[Callable[[date], None]]:
    """A progress bar over the interval's days; yields the per-day callback."""
    # Imported here: commands without a progress bar (rollback, models) skip it.
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    days = list(interval.days())
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{label} {interval}", total=len(days))
        yield lambda _day: progress.advance(task)


def _emit(result: Any) -> None:
    """Print a stage's result as JSON on stdout (for scripts and DVC)."""
    payload = asdict(result) if is_dataclass(result) and not isinstance(result, type) else result
    typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


def _expected_failures() -> tuple[type[BaseException], ...]:
    """The data plane's expected failures: printed as a message, never a traceback."""
    from driftline.data.errors import DataError

    return (DataError, FileNotFoundError)


def _fail_on_gate(call: Callable[[], Any]) -> Any:
    """Run a stage; turn an expected data failure into a clear message and exit code 2.

    Rejected batches, missing landing files or partitions and a day held by another run
    are conditions of the data, not bugs: the message names the cause and what to run
    next, and no traceback is printed.
    """
    try:
        return call()
    except _expected_failures() as error:
        from rich.markup import escape

        from driftline.data.errors import BatchQuarantined

        label = "rejected" if isinstance(error, BatchQuarantined) else "error"
        console.print(f"[bold red]{label}:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(code=2) from None


def _scenarios(drift: list[str] | None) -> tuple[Any, ...]:
    """Drift scenarios from ``NAME[:INTENSITY]@YYYY-MM-DD`` options."""
    from driftline.simulator import DriftScenario

    try:
        return tuple(DriftScenario.parse(item) for item in drift or [])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--drift") from None


@app.command()
def simulate(
    start: Start,
    end: End = None,
    rows_per_day: Annotated[int, typer.Option(help="Transactions per day.")] = 5000,
    seed: Annotated[int | None, typer.Option(help="Simulator seed (default: settings).")] = None,
    fraud_rate: Annotated[float, typer.Option(help="Approximate share of fraud.")] = 0.01,
    drift: Annotated[
        list[str] | None,
        typer.Option(
            help="Drift scenario NAME[:INTENSITY]@YYYY-MM-DD (covariate_shift, "
            "new_fraud_pattern; intensity 1 by default, e.g. covariate_shift:0.3@2026-01-22)."
        ),
    ] = None,
    bad_batch: Annotated[
        list[str] | None,
        typer.Option(
            help="Broken landing file KIND@YYYY-MM-DD[:dataset], e.g. wrong_type@2026-01-03."
        ),
    ] = None,
) -> None:
    """Write simulated landing files (transactions, late chargebacks) for the interval."""
    from driftline.simulator import BadBatch, SimulatorConfig, write_landing

    cfg = get_settings()
    scenarios = _scenarios(drift)
    bad = []
    for item in bad_batch or []:
        kind, rest = item.split("@", 1)
        day, _, dataset = rest.partition(":")
        bad.append(BadBatch(kind, date.fromisoformat(day), dataset or "transactions"))  # type: ignore[arg-type]
    config = SimulatorConfig(
        seed=cfg.seed if seed is None else seed,
        rows_per_day=rows_per_day,
        fraud_rate=fraud_rate,
        anchor=cfg.simulation_start,
        scenarios=scenarios,
        bad_batches=tuple(bad),
    )
    interval = Interval.parse(start, end)
    with _days("simulate", interval) as on_day:
        result = write_landing(config, interval, cfg.lake_uri, progress=on_day)
    _emit(result)


@app.command()
def ingest(dataset: Dataset, start: Start, end: End = None) -> None:
    """Stage the landing files of DATASET for the interval."""
    from driftline.data.ingest import ingest as run

    interval = Interval.parse(start, end)
    with _days(f"ingest {dataset}", interval) as on_day:
        _emit(_fail_on_gate(lambda: run(dataset, interval, on_day=on_day)))


@app.command()
def validate(dataset: Dataset, start: Start, end: End = None) -> None:
    """Validate staged DATASET batches (GX); publish raw partitions or quarantine."""
    from driftline.data.ingest import publish_validated

    interval = Interval.parse(start, end)
    with _days(f"validate {dataset}", interval) as on_day:
        _emit(_fail_on_gate(lambda: publish_validated(dataset, interval, on_day=on_day)))


@app.command()
def features(start: Start, end: End = None) -> None:
    """Compute, validate and publish the interval's store (Spark) and fresh features."""
    from driftline.data.features import build_features

    interval = Interval.parse(start, end)
    with console.status(f"features {interval} (Spark)"):
        _emit(_fail_on_gate(lambda: build_features(interval)))


@app.command()
def materialize(start: Start, end: End = None) -> None:
    """Load the interval's features into the Feast online store."""
    from driftline.data.feast import materialize_interval

    interval = Interval.parse(start, end)
    with console.status(f"materialize {interval} (Feast)"):
        _emit(_fail_on_gate(lambda: materialize_interval(interval)))


@app.command("apply-features")
def apply_features() -> None:
    """Register the Feast definitions of feature_repo/ (feast apply)."""
    from driftline.data.feast import apply_definitions

    store = apply_definitions()
    _emit({"project": store.project, "feature_views": [v.name for v in store.list_feature_views()]})


Trials = Annotated[int | None, typer.Option("--trials", help="Optuna trials (default: settings).")]
Workers = Annotated[
    int | None, typer.Option("--workers", help="Parallel tuning workers (default: settings).")
]


@app.command("training-set")
def training_set(
    start: Start,
    end: Cutoff,
    out: Annotated[str, typer.Option("--out", help="Folder for the split Parquet files.")],
) -> None:
    """Build the point-in-time training set of a window (what the pipeline's first step does)."""
    from driftline.training.dataset import build_training_set

    _emit(build_training_set(Interval.parse(start, end), out, get_settings()).to_dict())


@app.command()
def train(
    start: Start,
    end: Cutoff,
    trials: Trials = None,
    workers: Workers = None,
    request_id: Annotated[
        str, typer.Option("--request-id", help="Idempotency key (default: the window).")
    ] = "",
    summary: Annotated[
        str | None, typer.Option("--summary", help="Also write the outcome JSON here.")
    ] = None,
) -> None:
    """Run the Kubeflow training pipeline (local runner, or the KFP host in settings)."""
    from pathlib import Path

    from driftline.orchestration.training import run_training

    Interval.parse(start, end)  # a clear error for a bad window before anything runs
    outcome = run_training(start, end, trials=trials, workers=workers, request_id=request_id)
    if summary:
        Path(summary).parent.mkdir(parents=True, exist_ok=True)
        Path(summary).write_text(json.dumps(outcome, indent=2, sort_keys=True, default=str))
    _print_outcome(outcome)
    _emit(outcome)


def _print_outcome(outcome: dict[str, Any]) -> None:
    """Say what was registered, with which alias, and where to look."""
    cfg = get_settings()
    alias = outcome["alias"] or "none (" + "; ".join(outcome["gate_reasons"]) + ")"
    metrics = ", ".join(
        f"{k} {v:.4f}" for k, v in sorted(outcome["metrics"].items()) if isinstance(v, float)
    )
    console.print(f"[bold]registered[/] {outcome['model_name']} version {outcome['version']}")
    console.print(f"[bold]alias[/] {alias}")
    console.print(f"[bold]metrics[/] {metrics}")
    console.print(
        f"[bold]MLflow UI[/] mlflow ui --backend-store-uri {cfg.mlflow_tracking_uri} "
        "(or: make mlflow-ui)"
    )


@app.command()
def evaluate(
    start: Start,
    end: Cutoff,
    summary: Annotated[str, typer.Option("--summary", help="Outcome JSON of `driftline train`.")],
    out: Annotated[str, typer.Option("--out", help="Folder for metrics.json and curves.")],
) -> None:
    """Evaluate the registered version named in ``--summary`` on the window's holdout."""
    from pathlib import Path

    from driftline.training.steps import evaluate_registered

    version = str(json.loads(Path(summary).read_text())["version"])
    _emit(evaluate_registered(Interval.parse(start, end), version, Path(out), get_settings()))


@app.command()
def models() -> None:
    """List the registered model's versions: aliases, gate verdicts, holdout metrics.

    A version scored in shadow (alias ``shadow``) also shows how its scores compare with
    the served champion's on the same transactions (from the shadow log).
    """
    from driftline.lifecycle import registry

    cfg = get_settings()
    mlflow_client = registry.client(cfg)
    versions = mlflow_client.search_model_versions(f"name = '{cfg.model_name}'")
    # Search results carry no aliases; the registered model does (and the canary control).
    state = registry.serving_state(cfg) if versions else registry.ServingState({}, None)
    aliases: dict[str, list[str]] = {}
    for alias, version in state.aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    control = state.active_canary
    rows = [_version_row(v, aliases) for v in sorted(versions, key=lambda v: int(v.version))]
    if control is not None:
        rows = [
            row | {"canary_control": control.to_dict()}
            if row["version"] == control.version
            else row
            for row in rows
        ]
    console.print(f"[bold]{cfg.model_name}[/] in {cfg.mlflow_tracking_uri}")
    for row in rows:
        console.print(
            f"  version {row['version']}: aliases {', '.join(row['aliases']) or '-'}; "
            f"gate {row['gate']} ({row['gate_reasons']}); holdout PR-AUC {row['pr_auc']}, "
            f"ROC-AUC {row['roc_auc']}, recall@1%FPR {row['recall_at_fpr']}; "
            f"window {row['data_interval']}"
        )
    if control is not None:
        console.print(
            f"  canary version {control.version}: weight {control.weight:.3f}, "
            f"{control.state} (serving weight {control.serving_weight:.3f} on every replica), "
            f"set by {control.actor or '-'} {control.updated}"
        )
    elif registry.CANARY in state.aliases:
        console.print(
            f"  canary version {state.aliases['canary']}: no canary control in the registry; "
            f"replicas use serve_canary_weight ({cfg.serve_canary_weight:.3f})"
        )
    shadows = _shadow_reports(cfg)
    for report in shadows:
        console.print(
            f"  shadow version {report['shadow_version']}: {report['rows']} rows scored in "
            f"shadow on {', '.join(report['days'])} ({report['errors']} failed); vs the served "
            f"champion: score PSI {_number(report['score_psi'])}, mean |diff| "
            f"{_number(report['mean_abs_diff'])}, decisions agree "
            f"{_number(report['decision_agreement'])}"
        )
    console.print(
        f"[bold]MLflow UI[/] make mlflow-ui  (mlflow ui --backend-store-uri "
        f"{cfg.mlflow_tracking_uri})"
    )
    by_version = {report["shadow_version"]: report for report in shadows}
    _emit(
        [
            row | {"shadow": by_version[row["version"]]} if row["version"] in by_version else row
            for row in rows
        ]
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _shadow_reports(cfg: Any) -> list[dict[str, Any]]:
    """Per version found in the shadow log: its comparison with the served scores."""
    from driftline.monitoring.canary import analyse_shadow, read_shadow, shadow_days

    rows = read_shadow(cfg, shadow_days(cfg))
    if rows.empty:
        return []
    versions = sorted(set(rows["shadow_version"].astype(str)), key=lambda v: (len(v), v))
    return [analyse_shadow(rows, shadow_version=v).to_dict() for v in versions]


def _version_row(version: Any, aliases: dict[str, list[str]]) -> dict[str, Any]:
    """One registered version as ``driftline models`` shows it."""
    tags = version.tags or {}
    return {
        "version": str(version.version),
        "aliases": sorted(aliases.get(str(version.version), [])),
        "gate": tags.get("gate.staging", ""),
        "gate_reasons": tags.get("gate.reasons", ""),
        "pr_auc": tags.get("candidate.pr_auc", ""),
        "roc_auc": tags.get("candidate.roc_auc", ""),
        "recall_at_fpr": tags.get("candidate.recall_at_fpr", ""),
        "champion_pr_auc": tags.get("champion.pr_auc", ""),
        "data_interval": tags.get("data_interval", ""),
        "model_family": tags.get("model_family", ""),
    }


@app.command()
def rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why the champion is rolled back.")],
) -> None:
    """Restore the previous champion in one step (the recorded ``champion.previous``)."""
    from driftline.lifecycle.promotion import PromotionError
    from driftline.lifecycle.promotion import rollback as run

    cfg = get_settings()
    try:
        transition = run(cfg, reason=reason, actor="cli")
    except PromotionError as error:
        console.print(f"[bold red]refused:[/] {error}")
        raise typer.Exit(code=2) from error
    console.print(
        f"[bold]champion[/] {cfg.model_name} version {transition.previous} -> "
        f"{transition.version} (restored)"
    )
    _emit(transition.to_dict())


@app.command()
def shadow(
    version: Annotated[
        str | None, typer.Option("--version", help="Registered version to score in shadow.")
    ] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Remove the shadow alias.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "scored in shadow",
) -> None:
    """Set (``--version``) or remove (``--stop``) the ``shadow`` alias.

    The scoring service scores the shadow version on a copy of its traffic, never
    answering with it; ``driftline models`` then compares its scores with the served ones.
    """
    from driftline.lifecycle.promotion import PromotionError, start_shadow, stop_shadow

    if (version is None) == (not stop):
        console.print("[bold red]refused:[/] give either --version or --stop")
        raise typer.Exit(code=2)
    cfg = get_settings()
    try:
        if stop:
            transition = stop_shadow(cfg, reason=reason, actor="cli")
        else:
            transition = start_shadow(cfg, str(version), reason=reason, actor="cli")
    except PromotionError as error:
        console.print(f"[bold red]refused:[/] {error}")
        raise typer.Exit(code=2) from error
    _emit(transition.to_dict())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Run the scoring service (champion/canary by alias, Feast online features)."""
    import uvicorn

    from driftline.serving import create_app
    from driftline.serving.app import InsecureSettingsError, check_api_keys

    cfg = get_settings()
    try:
        check_api_keys(cfg)  # before uvicorn, so the refusal is one clear line
    except InsecureSettingsError as error:
        console.print(f"[bold red]refusing to serve:[/] {error}", highlight=False)
        raise typer.Exit(code=2) from error
    console.print(f"[bold]serving[/] {cfg.model_name} on http://{host}:{port} (docs: /docs)")
    uvicorn.run(lambda: create_app(cfg), factory=True, host=host, port=port, log_level="info")


@app.command()
def replay(
    day: Annotated[str, typer.Option("--day", help="Simulated day to replay (YYYY-MM-DD).")],
    url: Annotated[str, typer.Option("--url", help="Scoring service root.")] = (
        "http://localhost:8000"
    ),
    rate: Annotated[
        float, typer.Option("--rate", help="Requests per second (<= 0: as fast as possible).")
    ] = 50.0,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Send only the day's first N transactions.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="1: /v1/score; more: /v1/score/batch chunks.")
    ] = 1,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="X-API-Key (default: first serve_api_keys).")
    ] = None,
    rows_per_day: Annotated[int, typer.Option(help="Simulator rows per day.")] = 5000,
    fraud_rate: Annotated[float, typer.Option(help="Simulator share of fraud.")] = 0.01,
    seed: Annotated[int | None, typer.Option(help="Simulator seed (default: settings).")] = None,
    drift: Annotated[
        list[str] | None,
        typer.Option(
            help="Drift scenario NAME[:INTENSITY]@YYYY-MM-DD, as given to `driftline simulate`."
        ),
    ] = None,
) -> None:
    """Replay a simulated day of transactions against a running scoring service."""
    from driftline.serving.app import api_keys
    from driftline.serving.replay import replay_day
    from driftline.simulator import SimulatorConfig

    cfg = get_settings()
    config = SimulatorConfig(
        seed=cfg.seed if seed is None else seed,
        rows_per_day=rows_per_day,
        fraud_rate=fraud_rate,
        anchor=cfg.simulation_start,
        scenarios=_scenarios(drift),
    )
    key = api_key or next(iter(api_keys(cfg)), "")
    with console.status(f"replay {day} -> {url}"):
        result = replay_day(
            date.fromisoformat(day),
            base_url=url,
            api_key=key,
            rate=rate,
            config=config,
            batch_size=batch_size,
            limit=limit,
        )
    console.print(
        f"[bold]replayed[/] {result.sent} transactions: {result.ok} scored, failed "
        f"{result.failed or 0}; variants {result.variants}; p50 {result.latency_p50_ms} ms, "
        f"p99 {result.latency_p99_ms} ms"
    )
    _emit(result.to_dict())
    if result.ok < result.sent:
        raise typer.Exit(code=1)


@app.command()
def monitor(
    day: Annotated[str, typer.Option("--day", help="Served day to judge (YYYY-MM-DD).")],
) -> None:
    """Judge one day of served traffic for drift and print the retrain decision.

    The same step as the ``monitor_drift`` DAG's ``check_drift`` task (it records the
    day in the drift log); it requests no retrain, the DAG does.
    """
    from driftline.monitoring.steps import check_interval

    checked = check_interval(Interval.parse(day), get_settings())
    console.print(f"[bold]decision[/] {checked['decision']['reason']}")
    _emit(checked)


@app.command()
def where() -> None:
    """Print where the partitions, GX data docs and Feast online store are."""
    from driftline.core import lake

    cfg = get_settings()
    fs, root = lake.filesystem(cfg.lake_uri)
    zones = {}
    for zone in ("landing", "raw", "features", "quarantine"):
        found = fs.glob(f"{root}/{zone}/*/dt=*") if fs.exists(f"{root}/{zone}") else []
        zones[zone] = sorted(str(p).removeprefix(root + "/") for p in found)
    docs = cfg.gx_state_dir / "uncommitted" / "data_docs" / "local_site" / "index.html"
    console.print(f"[bold]lake[/] {cfg.lake_uri}")
    for zone, parts in zones.items():
        console.print(f"  {zone:<11} {len(parts):>3} partitions")
    console.print(f"[bold]GX data docs[/] {docs} (exists: {docs.exists()})")
    console.print(f"[bold]Feast online store[/] {cfg.feast_online_path} (env {cfg.feast_env})")
    console.print(f"[bold]Feast registry[/] {cfg.feast_registry}")
    console.print(f"[bold]Airflow home[/] {cfg.airflow_home}  (UI: make airflow-ui)")
    _emit(
        {
            "lake_uri": cfg.lake_uri,
            "partitions": zones,
            "gx_data_docs": str(docs),
            "feast_online_store": cfg.feast_online_path,
        }
    )


@app.command()
def info() -> None:
    """Show where everything lives (settings after defaults, secrets masked)."""
    cfg = get_settings()
    _emit(
        {
            **cfg.redacted(),
            "gx_data_docs": str(cfg.gx_state_dir),
            "airflow_home": str(cfg.airflow_home),
        }
    )


if __name__ == "__main__":
    app()
