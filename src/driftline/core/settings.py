"""Typed settings for every driftline stage.

One object, built lazily by :func:`get_settings`, read from ``DRIFTLINE_*``
environment variables (and an optional ``.env`` file). Every field has an embedded
local default under a single project-local state folder (``DRIFTLINE_HOME``,
``./.driftline`` by default), so a fresh clone runs with no configuration.
Production points the same fields at S3 (any fsspec URI), Postgres, Redis and a
Spark master.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AwareDatetime, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Repository root when running from a checkout (``src/driftline/settings.py`` -> root).
PROJECT_ROOT = Path(__file__).resolve().parents[3]


#: The environment of a checkout, where development defaults are allowed.
LOCAL_ENVIRONMENT = "local"
#: The development API key (documented; refused outside the local environment).
DEV_API_KEY = "driftline-dev-key"
#: What a masked secret shows.
MASK = "***"
_SECRET_NAME = re.compile(r"(_keys?$|password|secret|token)")
_PASSWORD_PAIR = re.compile(r"(password=)[^,;&\s]+", re.IGNORECASE)


def mask_secrets(value: str) -> str:
    """``value`` with the password of a URI and ``password=`` pairs replaced by ``***``."""
    masked = _PASSWORD_PAIR.sub(rf"\g<1>{MASK}", value)
    try:
        parts = urlsplit(masked)
        password = parts.password
    except ValueError:  # not a URI (an odd port, say): nothing more to find
        return masked
    if not password or password == MASK:
        return masked
    user = parts.username or ""
    netloc = parts.netloc.replace(f"{user}:{password}@", f"{user}:{MASK}@", 1)
    return parts._replace(netloc=netloc).geturl()


class Settings(BaseSettings):
    """All configuration of driftline; see the module docstring for precedence."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_", env_file=".env", extra="ignore", frozen=True
    )

    home: Path = Field(
        default_factory=lambda: Path.cwd() / ".driftline",
        description="Project-local state folder holding every embedded default.",
    )
    lake_uri: str = Field(
        default="",
        description="Root of the data lake (local path or fsspec URI such as s3://bucket/lake).",
    )
    spark_master: str = Field(default="local[*]", description="Spark master URL.")
    spark_shuffle_partitions: int = Field(
        default=4, ge=1, description="spark.sql.shuffle.partitions for the feature job."
    )
    feature_repo: Path = Field(
        default=PROJECT_ROOT / "feature_repo", description="Feast repository path."
    )
    feast_env: str = Field(
        default="local",
        description=(
            "Feast environment: local (feature_repo/feature_store.yaml) or another "
            "(feature_repo/environments/<env>/feature_store.yaml)."
        ),
    )
    environment: str = Field(
        default="",
        description="Deployment environment: local (a checkout; development defaults such as "
        "the documented API key are allowed) or another name such as production. Empty: "
        "the feast_env.",
    )
    feast_registry: str = Field(default="", description="Feast registry path or URI.")
    feast_online_path: str = Field(default="", description="SQLite online store file.")
    redis_url: str = Field(
        default="localhost:6379", description="Redis connection string (production online store)."
    )
    event_store_url: str = Field(
        default="",
        description="Event state of the fresh features (driftline.data.events): empty for "
        "the embedded SQLite file {home}/events/events.db, or redis://host:port/db (atomic "
        "across scoring replicas).",
    )
    event_store_timeout_ms: int = Field(
        default=50,
        ge=1,
        description="Connect and read timeout of the Redis event state, milliseconds.",
    )
    gx_project_dir: Path = Field(
        default=PROJECT_ROOT / "great_expectations",
        description="Committed GX definitions (expectation suites).",
    )
    gx_docs_index_limit: int = Field(
        default=100,
        ge=1,
        description="Validation results the GX data docs index lists (the newest): GX reads "
        "every listed result on each docs update, so an unbounded index made each "
        "validation slower than the last. Every result keeps its page, and every verdict "
        "is in the lake.",
    )
    mlflow_tracking_uri: str = Field(default="", description="MLflow tracking URI.")
    mlflow_artifact_uri: str = Field(
        default="", description="Artifact root of the MLflow experiment (path or s3:// URI)."
    )
    registry_fast_path: bool = Field(
        default=True,
        description="driftline rollback reads and writes the registry without importing "
        "MLflow (MLflow's REST API, or its SQLite tables at the known schema revision); "
        "false: through MLflowClient (lifecycle.alias_store).",
    )
    optuna_storage: str = Field(default="", description="Optuna storage URL or journal file.")
    simulation_start: date = Field(
        default=date(2026, 1, 1), description="First simulated day (population anchor)."
    )
    seed: int = Field(default=7, description="Seed of the transaction simulator.")
    data_start: date | None = Field(
        default=None,
        description="First day of data: look-back days before it are legitimately absent "
        "(and never read). None: every look-back day a feature run needs must have its "
        "validated raw partitions.",
    )

    # Training plane -------------------------------------------------------------------
    model_name: str = Field(
        default="driftline-fraud", description="Registered model name in MLflow."
    )
    mlflow_experiment: str = Field(
        default="driftline-training", description="MLflow experiment of training runs."
    )
    label_maturity_days: int = Field(
        default=7,
        ge=0,
        description="Transactions younger than this at the label cut-off are left out of "
        "training sets (their chargebacks may not have arrived yet).",
    )
    valid_days: int = Field(default=2, ge=1, description="Days in the validation split.")
    holdout_days: int = Field(default=2, ge=1, description="Days in the recent holdout.")
    tuning_trials: int = Field(default=8, ge=1, description="Optuna trials per training run.")
    tuning_workers: int = Field(
        default=2, ge=1, description="Parallel Optuna workers (pipeline fan-out) on one study."
    )
    max_epochs: int = Field(default=8, ge=1, description="Epoch budget per trial and final fit.")
    train_seed: int = Field(default=13, description="Seed of tuning and training.")
    train_use_gpu: bool = Field(
        default=False, description="The pipeline's train step requests one NVIDIA GPU."
    )
    gate_min_pr_auc: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Staging gate: absolute holdout PR-AUC floor (the simulator's base rate "
        "is 1-2%, so 0.1 is several times a constant score's PR-AUC).",
    )
    gate_champion_tolerance: float = Field(
        default=0.02,
        ge=0.0,
        description="Staging gate: largest PR-AUC shortfall versus the champion allowed.",
    )
    kfp_host: str = Field(
        default="", description="Kubeflow Pipelines API; empty runs the pipeline locally."
    )

    # Serving --------------------------------------------------------------------------
    serve_api_keys: str = Field(
        default=DEV_API_KEY,
        description="Comma-separated API keys accepted in X-API-Key (the default is a "
        "documented development key, refused outside the local environment; production "
        "sets its own from a secret).",
    )
    serve_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Scores at or above this are declined."
    )
    serve_canary_weight: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Share of users routed to the canary model."
    )
    serve_poll_seconds: float = Field(
        default=0.5,
        gt=0.0,
        description="Seconds between polls of the serving aliases (one cheap registry "
        "read; versions are loaded in the background before they are swapped in).",
    )
    serve_batch_window_ms: float = Field(
        default=2.0,
        ge=0.0,
        description="Longest wait to merge concurrent requests into one forward pass "
        "(only while other requests are on their way to the model); 0 turns it off.",
    )
    serve_batch_max_rows: int = Field(
        default=512, ge=1, description="Most rows in one merged forward pass."
    )
    serve_shadow_queue: int = Field(
        default=1024,
        ge=1,
        description="Requests waiting for the shadow model; beyond it copies are dropped "
        "(and counted), never the answer delayed.",
    )
    prediction_log_flush_rows: int = Field(
        default=500,
        ge=1,
        description="The prediction log writes a file to the lake once this many rows are "
        "buffered (1: every request's rows before it answers).",
    )
    prediction_log_flush_seconds: float = Field(
        default=2.0,
        gt=0,
        description="...and at least this often when rows are buffered (a background thread).",
    )
    serve_feature_timeout_ms: int = Field(
        default=50,
        ge=1,
        description="Online-store calls slower than this (from the call's start; waiting "
        "for a worker is not counted) count as failed.",
    )
    serve_feature_timeout_per_entity_ms: float = Field(
        default=0.5,
        ge=0.0,
        description="Added to serve_feature_timeout_ms for each distinct entity pair beyond "
        "the first in one (merged) store call: Feast reads about 0.1 ms per pair "
        "in-process, so a read of 130 pairs may take 50 + 64.5 ms.",
    )
    serve_breaker_failures: int = Field(
        default=3, ge=1, description="Consecutive feature-store failures that open the breaker."
    )
    serve_breaker_reset_seconds: float = Field(
        default=10.0, gt=0.0, description="Seconds the breaker stays open before a trial call."
    )
    serve_max_batch: int = Field(
        default=256, ge=1, description="Most transactions in one batch scoring request."
    )
    serve_max_body_bytes: int = Field(
        default=262_144, ge=1, description="Largest request body accepted (413 above)."
    )
    serve_max_amount: float = Field(
        default=1_000_000.0, gt=0.0, description="Largest transaction amount accepted."
    )
    serve_min_timestamp: AwareDatetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="Earliest transaction time accepted (422 before; a plausibility bound, "
        "so a typo cannot be scored and logged into a far-off day).",
    )
    serve_max_timestamp: AwareDatetime = Field(
        default=datetime(2100, 1, 1, tzinfo=UTC),
        description="Latest transaction time accepted (422 at or after).",
    )
    serve_max_in_flight: int = Field(
        default=16,
        ge=1,
        description="Scoring requests served at once; more wait in the admission queue.",
    )
    serve_max_queued: int = Field(
        default=128,
        ge=0,
        description="Scoring requests waiting for a slot; beyond it 503 with Retry-After.",
    )
    serve_queue_timeout_ms: int = Field(
        default=1000,
        ge=1,
        description="Longest wait in the admission queue; past it 503 with Retry-After.",
    )
    serve_feature_workers: int = Field(
        default=2,
        ge=1,
        description="Threads reading the online store; each reads every pending lookup at "
        "once (one store call for all of them).",
    )
    serve_feature_queue_ms: int = Field(
        default=1000,
        ge=1,
        description="Longest a lookup waits for a free feature worker (only when all are "
        "stuck in store calls); not counted as a store failure.",
    )
    serve_event_timeout_ms: float = Field(
        default=50.0,
        gt=0.0,
        description="Event-store calls (record_and_read of the fresh features; from the "
        "call's start) slower than this count as failed: the rows get NaN fresh features "
        "and are flagged features_fallback.",
    )
    serve_event_timeout_per_event_ms: float = Field(
        default=0.2,
        ge=0.0,
        description="Added to serve_event_timeout_ms for each transaction beyond the first "
        "in one (coalesced) event-store call.",
    )
    serve_rate_limit_per_second: float = Field(
        default=1000.0,
        ge=0.0,
        description="Scoring requests per second per API key (token bucket; 429 with "
        "Retry-After beyond it); 0 turns the limit off.",
    )
    serve_rate_limit_burst: int = Field(
        default=2000, ge=1, description="Token-bucket size of the per-key rate limit."
    )

    # Drift -----------------------------------------------------------------------------
    drift_share_threshold: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Data drift when at least this share of the model inputs drifted "
        "(each column judged by Evidently's per-column test).",
    )
    drift_prediction_threshold: float = Field(
        default=0.2,
        gt=0.0,
        description="Prediction drift when the PSI (population stability index) of the served "
        "scores versus the reference scores is at or above this; a distance, not a p-value "
        "(rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift).",
    )
    drift_min_rows: int = Field(
        default=200,
        ge=1,
        description="Intervals with fewer served rows are 'insufficient data': no drift decision.",
    )
    drift_debounce_days: int = Field(
        default=2,
        ge=1,
        description="Consecutive drifted intervals needed before drift triggers a retrain.",
    )
    drift_cooldown_days: int = Field(
        default=7,
        ge=0,
        description="Days after a triggered retrain during which drift triggers nothing new.",
    )
    drift_reference_days: int = Field(
        default=7,
        ge=1,
        description="Newest labelled days of a training set that form its drift reference "
        "(a whole week covers the weekly rhythm of spending).",
    )
    drift_reference_max_rows: int = Field(
        default=50_000,
        ge=1,
        description="Larger reference frames are sampled down (deterministically) to this.",
    )
    drift_performance_drop: float = Field(
        default=0.25,
        gt=0.0,
        lt=1.0,
        description="Performance drift when the served champion's PR-AUC on matured labels "
        "falls below its PR-AUC on its drift reference (newest labelled days) times (1 - this).",
    )
    drift_performance_days: int = Field(
        default=2,
        ge=1,
        description="Matured transaction days (ending label_maturity_days before the "
        "interval) whose served scores are judged against labels.",
    )
    drift_reference_served_days: int = Field(
        default=2,
        ge=0,
        description="The champion's own first days as champion (its served scores, labelled "
        "by the same rule) that join its performance reference beside the holdout days, "
        "once they lie before the days being judged (0: the holdout days alone).",
    )
    drift_min_positives: int = Field(
        default=20,
        ge=1,
        description="Labelled frauds needed among those days for a performance verdict, "
        "counted as distinct fraud accounts (user_id) where the rows carry them.",
    )
    drift_bootstrap_samples: int = Field(
        default=400,
        ge=50,
        description="Resamples of the stratified bootstrap behind every PR-AUC interval "
        "(performance drift, the new-regime gate, the canary's re-judgement; fixed seed); "
        "it resamples fraud campaigns (accounts, merged where their frauds share a compromised "
        "merchant), "
        "not rows, where the rows carry user_id.",
    )
    drift_confidence: float = Field(
        default=0.9,
        gt=0.5,
        lt=1.0,
        description="Two-sided level of those intervals: a drop counts only when the whole "
        "interval lies below zero (one-sided (1 + this) / 2). The performance check judges "
        "PR-AUC and ROC-AUC, each at the Bonferroni level 1 - (1 - this) / 2.",
    )
    drift_threshold_quantile: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="Per-input data-drift threshold: this quantile of the input's drift "
        "statistic between one reference day and the other reference days (the no-drift "
        "variability of the reference).",
    )
    drift_threshold_min: float = Field(
        default=0.02,
        ge=0.0,
        description="Smallest calibrated per-input threshold (an input that never varies "
        "in the reference would otherwise drift on any change).",
    )
    consistency_min_share: float = Field(
        default=0.995,
        ge=0.0,
        le=1.0,
        description="The monitor flags a day whose served fresh features match the offline "
        "ones (features/fresh) on fewer than this share of rows (a flag, never a failure).",
    )

    # Retrain and canary ----------------------------------------------------------------
    retrain_window_days: int = Field(
        default=21, ge=1, description="Days of data a drift-triggered retrain trains on."
    )
    retrain_min_drift_days: int = Field(
        default=3,
        ge=0,
        description="A drift triggers a retrain only once the training split would hold at "
        "least this many labelled days of the drift (a model cannot learn a new pattern "
        "from labels that have not arrived).",
    )
    retrain_min_improvement: float = Field(
        default=0.0,
        description="retrain_promote's gate: candidate holdout PR-AUC must exceed the "
        "champion's on the same most recent labelled days by more than this.",
    )
    gate_min_positives: int = Field(
        default=20,
        ge=1,
        description="Promotion evidence: accounts with a labelled fraud needed on the "
        "post-drift days the candidate did not train on, else it is not promoted "
        "(insufficient evidence). A burst of frauds on one card counts once.",
    )
    gate_segment_min_positives: int = Field(
        default=10,
        ge=1,
        description="Accounts with a labelled fraud a segment (see gate_segments) needs to "
        "be judged; a candidate significantly worse on a judged segment is not promoted.",
    )
    gate_segments: str = Field(
        default="channel,merchant_category",
        description="Comma-separated model inputs whose values form the segments the "
        "promotion gate compares candidate and champion on.",
    )
    canary_min_requests: int = Field(
        default=300, ge=1, description="Transactions routed to the canary before it is judged."
    )
    canary_wait_seconds: float = Field(
        default=1800.0, gt=0.0, description="Longest wait for canary traffic before aborting."
    )
    canary_poke_seconds: float = Field(
        default=10.0, gt=0.0, description="Seconds between checks of the canary's traffic."
    )
    canary_max_error_rate: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Largest share of canary rows that failed."
    )
    canary_max_latency_ratio: float = Field(
        default=3.0, gt=0.0, description="Largest canary/champion p99 model-latency ratio."
    )
    canary_latency_slack_ms: float = Field(
        default=20.0,
        ge=0.0,
        description="A canary p99 within this many ms of the champion's always passes.",
    )
    canary_max_score_psi: float = Field(
        default=1.0,
        gt=0.0,
        description="Largest difference between the live PSI of canary versus champion "
        "scores and the PSI offline evaluation measured between them on the same holdout "
        "(a retrained model may legitimately score very differently from the champion); "
        "without that measurement, the largest live PSI.",
    )
    canary_min_positives: int = Field(
        default=10,
        ge=1,
        description="Accounts with a labelled fraud needed per variant to compare PR-AUC.",
    )
    canary_label_tolerance: float = Field(
        default=0.05, ge=0.0, description="Largest canary PR-AUC shortfall versus the champion."
    )

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        """Fill URIs left empty with locations under :attr:`home`."""
        home = self.home.expanduser().resolve()
        derived = {
            "home": home,
            "lake_uri": self.lake_uri or str(home / "lake"),
            "feast_registry": self.feast_registry or str(home / "feast" / "registry.db"),
            "feast_online_path": self.feast_online_path or str(home / "feast" / "online.db"),
            "mlflow_tracking_uri": self.mlflow_tracking_uri
            or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
            "mlflow_artifact_uri": self.mlflow_artifact_uri
            or (home / "mlflow" / "artifacts").as_uri(),
            "optuna_storage": self.optuna_storage or str(home / "optuna" / "journal.log"),
            "environment": self.environment or self.feast_env,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)
        return self

    @property
    def is_local(self) -> bool:
        """Whether this is the local (development) environment."""
        return self.environment == LOCAL_ENVIRONMENT

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON values with secrets masked (for ``driftline info``).

        Fields named like a secret (``*_keys``, ``*password*``, ``*secret*``,
        ``*token*``) are masked whole; any other string keeps its shape but loses the
        password of a URI (``postgresql://user:***@host/db``) and ``password=`` pairs
        (Redis connection strings).
        """
        shown: dict[str, Any] = {}
        for name, value in self.model_dump(mode="json").items():
            if _SECRET_NAME.search(name) and value:
                shown[name] = MASK
            elif isinstance(value, str):
                shown[name] = mask_secrets(value)
            else:
                shown[name] = value
        return shown

    @property
    def gx_state_dir(self) -> Path:
        """Where GX keeps validation results and data docs (never the repository)."""
        return self.home / "gx"

    @property
    def training_dir(self) -> Path:
        """Local working area of training runs (KFP local pipeline root, checkpoints)."""
        return self.home / "training"

    @property
    def airflow_home(self) -> Path:
        """``AIRFLOW_HOME`` used by the embedded standalone Airflow."""
        return self.home / "airflow"


@functools.cache
def get_settings() -> Settings:
    """Return the process-wide settings, built on first use."""
    return Settings()
