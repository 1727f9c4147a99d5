"""Point-in-time-correct training sets from the lake and Feast.

A training run receives a data interval ``window = [start, end)``: everything known at
``end`` (the *label cut-off*) may be used. Transactions of the last
``label_maturity_days`` are left out because their chargebacks may still be on the
way; a transaction older than that with no chargeback reported before the cut-off is
a negative. The remaining days are split by time, never at random: the oldest days
train, the next ``valid_days`` validate (early stopping, tuning) and the last
``holdout_days`` are the recent holdout every candidate and the champion are judged on.

Each transaction gets the inputs serving has for it, as of the moment serving has them:

* **Store features** (day-old): the features of its user and merchant *as the online
  store serves them*, with Feast ``get_historical_features`` through the versioned
  feature service. The ingest DAG materializes each day into the online store after the
  day, so a transaction on day ``d`` is scored with the features as of the end of day
  ``d - 1``; the join is therefore as of one microsecond before the transaction's day
  starts (:func:`serving_as_of`). Joining as of the transaction itself would train on
  fresher values than serving ever has (a training/serving skew).
* **Fresh features** (:data:`~driftline.core.feature_spec.FRESH_FEATURES`): exact as of
  just before the transaction, joined by ``transaction_id`` from the offline table that
  :mod:`driftline.data.fresh` computes with the same function serving calls on its event
  state. Every transaction of the set must have its row; a missing day is an error,
  never a smaller training set.
* **Request-time fields** (amount, category, country, channel, currency, hour) come from
  the transaction.

No model trains on days whose look-back features are incomplete: with ``data_start``
declared, a window whose first training day is before
:func:`~driftline.data.features.first_complete_day` is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import lake
from driftline.core.columns import (
    KEYS,
    LABEL,
    MODEL_INPUTS,
    STORE_NUMERIC,
)
from driftline.core.feature_spec import FRESH_FEATURES
from driftline.core.interval import Interval
from driftline.core.schemas import LABELS, TRANSACTIONS
from driftline.core.settings import Settings, get_settings
from driftline.data.features import DATASET as FEATURES_DATASET
from driftline.data.features import LOOKBACK, first_complete_day
from driftline.data.fresh import MissingFreshFeaturesError, fresh_files, read_fresh_features

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "holdout")
MANIFEST = "manifest.json"
#: Features are looked up this long before the last materialization (state before it).
AS_OF_OFFSET = timedelta(microseconds=1)


def serving_as_of(ts: pd.Series) -> pd.Series:
    """When the online store last changed before each transaction time ``ts``.

    Materialization is daily, after the day's ingest: a transaction at ``ts`` sees the
    store as of the end of the previous day, i.e. just before its own day started.
    """
    return ts.dt.floor("D") - AS_OF_OFFSET


class TrainingSetError(ValueError):
    """The window cannot produce a usable training set (too short, no data, one class,
    incomplete look-back features, missing fresh features)."""


#: Columns of the model frame: keys, every model input, the fresh features (model
#: inputs too once ``core.columns`` lists them), the label.
FRAME_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys((*KEYS, *MODEL_INPUTS, *FRESH_FEATURES)))


@dataclass(frozen=True)
class SplitPlan:
    """Which transaction days feed each split, and the label cut-off."""

    train: Interval
    valid: Interval
    holdout: Interval
    label_cutoff: datetime

    @property
    def transactions(self) -> Interval:
        """Every transaction day used (train start to holdout end)."""
        return Interval(self.train.start, self.holdout.end)

    def split_of(self, ts: pd.Series) -> pd.Series:
        """Name of the split each timestamp falls in."""
        return pd.Series(
            pd.cut(
                ts,
                bins=[self.train.start, self.valid.start, self.holdout.start, self.holdout.end],
                labels=list(SPLITS),
                right=False,
            ).astype(str),
            index=ts.index,
        )


def plan_splits(window: Interval, settings: Settings) -> SplitPlan:
    """Lay the splits out inside ``window`` (see the module docstring).

    Raises:
        TrainingSetError: Fewer than one training day would remain.
    """
    mature_end = window.end - timedelta(days=settings.label_maturity_days)
    holdout = Interval(mature_end - timedelta(days=settings.holdout_days), mature_end)
    valid_start = holdout.start - timedelta(days=settings.valid_days)
    if valid_start - window.start < timedelta(days=1):
        need = settings.label_maturity_days + settings.holdout_days + settings.valid_days + 1
        raise TrainingSetError(
            f"window {window} is too short: it needs at least {need} days "
            f"(label maturity {settings.label_maturity_days}, holdout "
            f"{settings.holdout_days}, validation {settings.valid_days}, 1 training day)"
        )
    return SplitPlan(
        train=Interval(window.start, valid_start),
        valid=Interval(valid_start, holdout.start),
        holdout=holdout,
        label_cutoff=window.end,
    )


def require_complete_history(window: Interval, plan: SplitPlan, settings: Settings) -> None:
    """Refuse a window that trains on days whose look-back features are incomplete.

    Raises:
        TrainingSetError: ``data_start`` is declared and the first training day is
            before :func:`~driftline.data.features.first_complete_day`.
    """
    data_start, first = settings.data_start, first_complete_day(settings)
    train_start = plan.train.start.date()
    if data_start is None or first is None or train_start >= first:
        return
    raise TrainingSetError(
        f"window {window} trains from {train_start.isoformat()}, before "
        f"{first.isoformat()}, the first day whose look-back features are complete (data "
        f"starts {data_start.isoformat()} and the features look back "
        f"{(first - data_start).days} days): a model would learn windows that cover days "
        f"without data. Start the window on {first.isoformat()} or later."
    )


def _transactions(plan: SplitPlan, settings: Settings) -> pa.Table:
    days = list(plan.transactions.days())
    table = lake.read_partitions(settings.lake_uri, "raw", "transactions", days, TRANSACTIONS)
    if table.num_rows == 0:
        raise TrainingSetError(f"no raw transactions in {plan.transactions}")
    return table


def _fraud_ids(window: Interval, plan: SplitPlan, settings: Settings) -> set[str]:
    """Transactions with a chargeback reported before the cut-off."""
    labels = lake.read_partitions(settings.lake_uri, "raw", "labels", window.days(), LABELS)
    cutoff = pa.scalar(plan.label_cutoff, type=LABELS.field("label_ts").type)
    known = labels.filter(
        pc.and_(pc.less(labels["label_ts"], cutoff), pc.equal(labels["is_fraud"], 1))
    )
    return set(known["transaction_id"].to_pylist())


def _historical_features(
    entities: pd.DataFrame, store: FeatureStore, service: FeatureService
) -> pd.DataFrame:
    """Feast point-in-time join of every view of the feature service, as of each row.

    Each view of the service is joined on its own entity key in its own call. Feast's
    file (dask) offline store drops an entity row outright when one view has no row
    inside its TTL before the timestamp, taking the other views' values with it; one
    call per view turns that into what it means, "no features from this view", which
    the left join below keeps as missing values. Each view is asked once per distinct
    (entity, timestamp) pair: many transactions share one as-of time, and the store
    does not promise one answer per duplicated entity row.
    """
    joined = entities[["transaction_id"]]
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        keys = [column.name for column in view.entity_columns]
        refs = [
            f"{projection.name_alias or projection.name}:{field.name}"
            for field in projection.features
        ]
        pairs = entities[[*keys, "event_timestamp"]].drop_duplicates(ignore_index=True)
        pairs["pair_id"] = range(len(pairs))
        part: pd.DataFrame = store.get_historical_features(entity_df=pairs, features=refs).to_df()
        names = [field.name for field in projection.features]
        rows = entities[["transaction_id", *keys, "event_timestamp"]].merge(
            pairs, on=[*keys, "event_timestamp"], how="left", validate="m:1"
        )
        rows = rows.merge(part[["pair_id", *names]], on="pair_id", how="left", validate="m:1")
        joined = joined.merge(
            rows[["transaction_id", *names]], on="transaction_id", how="left", validate="1:1"
        )
    return joined


def _fresh_features(plan: SplitPlan, tx: pa.Table, settings: Settings) -> pd.DataFrame:
    """The fresh features of every transaction of ``tx`` (float64), by transaction id.

    Raises:
        TrainingSetError: A day's fresh features are missing, or a transaction has no
            fresh row (its day's features are older than its raw partition).
    """
    try:
        table = read_fresh_features(settings, plan.transactions.days())
    except MissingFreshFeaturesError as missing:
        raise TrainingSetError(f"training set {plan.transactions}: {missing}") from missing
    fresh = table.select(["transaction_id", *FRESH_FEATURES]).to_pandas()
    fresh = fresh.astype({name: "float64" for name in FRESH_FEATURES})
    lacking = set(tx["transaction_id"].to_pylist()) - set(fresh["transaction_id"])
    if lacking:
        raise TrainingSetError(
            f"training set {plan.transactions}: {len(lacking)} transactions have no fresh "
            f"features (e.g. {sorted(lacking)[:3]}); rebuild the features of their days "
            "(`driftline features`) after their raw partitions changed"
        )
    return fresh


def _model_frame(
    tx: pa.Table,
    frauds: set[str],
    fresh: pd.DataFrame,
    store: FeatureStore,
    service: FeatureService,
) -> pd.DataFrame:
    """Request-time fields + Feast features + fresh features + label, one row per txn."""
    frame = tx.to_pandas()
    entities = pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"],
            "user_id": frame["user_id"],
            "merchant_id": frame["merchant_id"],
            "event_timestamp": serving_as_of(frame["ts"]),
        }
    )
    features = _historical_features(entities, store, service)
    features = features[["transaction_id", *STORE_NUMERIC]].astype(
        {name: "float64" for name in STORE_NUMERIC}
    )
    out = frame.rename(columns={"ts": "event_timestamp"}).merge(
        features, on="transaction_id", how="left", validate="one_to_one"
    )
    out = out.merge(fresh, on="transaction_id", how="left", validate="one_to_one")
    out["hour_of_day"] = out["event_timestamp"].dt.hour.astype("float64")
    out[LABEL] = out["transaction_id"].isin(frauds).astype("int64")
    out = out.sort_values(["event_timestamp", "transaction_id"], ignore_index=True)
    return out[[*FRAME_COLUMNS, LABEL]]


def file_digest(uri: str) -> str:
    """SHA-256 of one lake file."""
    fs, path = lake.filesystem(uri)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_version(files: Iterable[str]) -> str:
    """One hash over the names and contents of the partitions a training set read."""
    digest = hashlib.sha256()
    for uri in sorted(files):
        digest.update(f"{uri.rsplit('/', 3)[-3:]}={file_digest(uri)}\n".encode())
    return digest.hexdigest()[:16]


def _input_files(window: Interval, plan: SplitPlan, settings: Settings) -> list[str]:
    lookback = plan.transactions.widen(LOOKBACK).days()
    return [
        *lake.existing_partition_files(
            settings.lake_uri, "raw", "transactions", plan.transactions.days()
        ),
        *lake.existing_partition_files(settings.lake_uri, "raw", "labels", window.days()),
        *lake.existing_partition_files(settings.lake_uri, "features", FEATURES_DATASET, lookback),
        *fresh_files(settings, plan.transactions.days()),
    ]


@dataclass(frozen=True)
class TrainingSet:
    """What :func:`build_training_set` wrote (also its ``manifest.json``)."""

    directory: str
    window: str
    label_cutoff: str
    splits: dict[str, str]
    rows: dict[str, int]
    positives: dict[str, int]
    data_version: str
    feature_service: str
    feature_service_version: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _check_classes(frame: pd.DataFrame, plan: SplitPlan) -> None:
    for split, part in frame.groupby("split", observed=True):
        if part[LABEL].nunique() < 2:
            raise TrainingSetError(
                f"the {split} split of {plan.transactions} has only one class "
                f"({len(part)} rows, {int(part[LABEL].sum())} frauds); widen the window"
            )
    missing = set(SPLITS) - set(frame["split"])
    if missing:
        raise TrainingSetError(f"no transactions in split(s) {sorted(missing)}")


def build_training_set(
    window: Interval, out_dir: Path | str, settings: Settings | None = None
) -> TrainingSet:
    """Build and write the train / valid / holdout Parquet files for ``window``.

    Raises:
        TrainingSetError: The window is too short, trains on days whose look-back
            features are incomplete, has no data or no fresh features for a day, or a
            split has one class.
    """
    from driftline.data.feast import FEATURE_SERVICE, apply_definitions

    cfg = settings or get_settings()
    plan = plan_splits(window, cfg)
    require_complete_history(window, plan, cfg)
    tx, frauds = _transactions(plan, cfg), _fraud_ids(window, plan, cfg)
    fresh = _fresh_features(plan, tx, cfg)
    store = apply_definitions(cfg)
    service = store.get_feature_service(FEATURE_SERVICE)
    frame = _model_frame(tx, frauds, fresh, store, service)
    frame["split"] = plan.split_of(frame["event_timestamp"])
    _check_classes(frame, plan)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        part = frame[frame["split"] == split].drop(columns="split")
        part.to_parquet(out / f"{split}.parquet", index=False)
    result = _describe(window, plan, frame, out, cfg, service)
    (out / MANIFEST).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    log.info("training set %s: %s rows, %s frauds", window, result.rows, result.positives)
    return result


def _describe(
    window: Interval,
    plan: SplitPlan,
    frame: pd.DataFrame,
    out: Path,
    cfg: Settings,
    service: FeatureService,
) -> TrainingSet:
    counts = frame.groupby("split", observed=True)[LABEL].agg(["size", "sum"])
    return TrainingSet(
        directory=str(out),
        window=str(window),
        label_cutoff=plan.label_cutoff.isoformat(),
        splits={name: str(getattr(plan, name)) for name in SPLITS},
        rows={name: int(counts.loc[name, "size"]) for name in SPLITS},
        positives={name: int(counts.loc[name, "sum"]) for name in SPLITS},
        data_version=data_version(_input_files(window, plan, cfg)),
        feature_service=service.name,
        feature_service_version=str(service.tags.get("version", "unversioned")),
    )


def load_split(directory: Path | str, split: str) -> pd.DataFrame:
    """Read one split of a training set written by :func:`build_training_set`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return pd.read_parquet(Path(directory) / f"{split}.parquet")


def load_manifest(directory: Path | str) -> dict[str, Any]:
    """The manifest of a training set."""
    manifest: dict[str, Any] = json.loads((Path(directory) / MANIFEST).read_text())
    return manifest
