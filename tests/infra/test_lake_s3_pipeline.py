"""The data plane on an S3 lake (a moto server): land, ingest, validate (with a quarantine),
features (store and fresh), Feast apply and materialize, and a training set.

``lake_uri`` is ``s3://<bucket>/lake`` and the calls are the ones the ingest DAG's tasks
and the training step make. Spark has no ``s3a`` here (pyspark ships no ``hadoop-aws``),
so the feature job reads its raw days through fsspec; its result must equal Spark's own
read of the same files on a local disk. The bucket holds exactly the expected objects,
none of them temporary; a rerun rewrites the same bytes under the same keys (only the
re-delivered bad batch adds its next quarantine attempt, as quarantine always does, and
each GX verdict is replaced by the rerun's);
and no local lake folder ever appears under ``DRIFTLINE_HOME``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from driftline.core import lake
from driftline.core.columns import STORE_NUMERIC
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.feast import get_store, materialize_interval, offline_s3_endpoint
from driftline.data.features import DATASET, build_features, compute_interval
from driftline.data.ingest import BatchQuarantined, ingest, publish_validated
from driftline.data.validate import RESULT_ZONE
from driftline.orchestration.landing import landing_status
from driftline.simulator import BadBatch, SimulatorConfig, write_landing
from driftline.training.dataset import build_training_set, load_manifest, load_split
from tests.conftest import ANCHOR
from tests.infra.conftest import Moto

#: Four good days (train, valid, holdout, and the day whose labels mature the holdout's).
GOOD = Interval.parse(ANCHOR.isoformat(), (ANCHOR + timedelta(days=4)).isoformat())
#: A fifth day whose transactions carry a negative amount: the gate quarantines them.
BAD_DAY = ANCHOR + timedelta(days=4)
CONFIG = SimulatorConfig(
    rows_per_day=300,
    fraud_rate=0.08,
    max_label_delay_days=1,
    bad_batches=(BadBatch("negative_amount", BAD_DAY),),
)
DATASETS = ("transactions", "labels")
#: The zone of the GX verdicts: one per suite and day, replaced (not added to) by a rerun.
VERDICTS = RESULT_ZONE


def objects(client: Any, bucket: str) -> dict[str, str]:
    """Every object of ``bucket``: key -> ETag (the MD5 of a single-part upload)."""
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
    return found


def run_pipeline(settings: Settings, training_dir: Path) -> None:
    """The data plane over :data:`GOOD` and the bad day, as the DAG tasks call it."""
    write_landing(CONFIG, Interval(GOOD.start, GOOD.end + timedelta(days=1)), settings.lake_uri)
    assert landing_status(GOOD, settings).ready
    for dataset in DATASETS:
        ingest(dataset, GOOD, settings)
        publish_validated(dataset, GOOD, settings)
    ingest("transactions", Interval.for_day(BAD_DAY), settings)
    with pytest.raises(BatchQuarantined, match="amount"):
        publish_validated("transactions", Interval.for_day(BAD_DAY), settings)
    build_features(GOOD, settings)
    materialize_interval(GOOD, settings)
    # 1 training, 1 validation, 1 holdout day, then 1 day for the holdout's labels. The
    # complete-look-back policy (training starts 14 days after data_start) is not what
    # this test is about: it is cleared so that four days make a training set.
    window = settings.model_copy(
        update={"data_start": None, "label_maturity_days": 1, "valid_days": 1, "holdout_days": 1}
    )
    build_training_set(GOOD, training_dir, window)


def expected_keys(days: list[str], attempts: int) -> set[str]:
    """The objects the pipeline leaves in the lake (``lake/`` prefix)."""
    landed = [*days, BAD_DAY.isoformat()]
    quarantine = f"quarantine/transactions/dt={BAD_DAY}"
    return {
        f"lake/{key}"
        for key in [
            *(f"landing/{ds}/dt={d}/{ds}.parquet" for ds in DATASETS for d in landed),
            *(f"simulator_truth/dt={d}/truth.parquet" for d in landed),
            *(f"staging/{ds}/dt={d}/part-0.parquet" for ds in DATASETS for d in days),
            *(f"raw/{ds}/dt={d}/part-0.parquet" for ds in DATASETS for d in days),
            *(f"features/{ds}/dt={d}/part-0.parquet" for ds in (DATASET, "fresh") for d in days),
            *(f"{VERDICTS}/raw_transactions/dt={d}/result.json" for d in landed),
            *(
                f"{VERDICTS}/{suite}/dt={d}/result.json"
                for suite in ("raw_labels", "features", "fresh_features")
                for d in days
            ),
            *(
                f"{quarantine}/attempt={n}/{name}"
                for n in range(1, attempts + 1)
                for name in ("transactions.parquet", "reason.txt", "validation_result.json")
            ),
        ]
    }


def test_data_plane_on_s3_writes_only_the_bucket_and_reruns_in_place(
    s3_lake: tuple[Settings, Any, str], moto_server: Moto, tmp_path: Path
) -> None:
    settings, client, bucket = s3_lake
    days = [day.isoformat() for day in GOOD.days()]
    assert offline_s3_endpoint(settings) == moto_server.endpoint

    run_pipeline(settings, tmp_path / "set-1")

    first = objects(client, bucket)
    assert set(first) == expected_keys(days, attempts=1)
    assert not [key for key in first if "/." in key]  # no temporary object, ever
    assert not (settings.home / "lake").exists()
    assert not list(settings.home.rglob("*.parquet"))  # no lake file anywhere in the state
    manifest = load_manifest(tmp_path / "set-1")
    assert min(manifest["positives"].values()) > 0
    # The point-in-time join read the feature table on S3: the holdout day's rows carry
    # the store features of the day before it.
    holdout = load_split(tmp_path / "set-1", "holdout")
    assert holdout[list(STORE_NUMERIC)].notna().all(axis=1).mean() > 0.5
    source = get_store(settings).get_data_source(DATASET)
    assert source.file_options.s3_endpoint_override == moto_server.endpoint
    columns = dict(source.get_table_column_names_and_types(get_store(settings).config))
    assert {"event_timestamp", *STORE_NUMERIC} <= set(columns)  # pyarrow's S3 read

    # The feature job's fsspec read gives what Spark reads from local files itself.
    local = settings.model_copy(update={"lake_uri": str(tmp_path / "local-lake")})
    fs, root = lake.filesystem(f"{settings.lake_uri}/raw")
    fs.get(root, str(tmp_path / "local-lake" / "raw"), recursive=True)
    published = pa.concat_tables(
        lake.read_file(lake.partition_file(settings.lake_uri, "features", DATASET, day))
        for day in GOOD.days()
    )
    assert compute_interval(GOOD, local).equals(published)

    run_pipeline(settings, tmp_path / "set-2")

    second = objects(client, bucket)
    retried = expected_keys(days, attempts=2) - expected_keys(days, attempts=1)
    assert set(second) - set(first) == retried
    # Same keys, same bytes; a verdict is the same key with the rerun's own record.
    data = {key: tag for key, tag in first.items() if not key.startswith(f"lake/{VERDICTS}/")}
    assert {key: second[key] for key in data} == data
    assert not (settings.home / "lake").exists()
    assert load_manifest(tmp_path / "set-2")["data_version"] == manifest["data_version"]


def test_prod_profile_exports_its_s3_lake_as_a_local_lake(
    s3_lake: tuple[Settings, Any, str], tmp_path: Path
) -> None:
    """What ``make test-prod`` reads after the in-memory emulator is gone is a lake."""
    from driftline.orchestration import prod

    _, client, _ = s3_lake
    bucket = prod.BUCKETS["lake"]
    # The moto server is shared: another module's test may have made the profile's
    # buckets already (test_feast_registry_s3 keeps its registry object there).
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
    table = pa.table({"transaction_id": ["a", "b"], "score": [0.1, 0.9]})
    try:
        lake.replace_partition(prod.LAKE_URI, "predictions", "log", ANCHOR, table)
        copied = prod.export_lake(prod.ProdLayout(tmp_path))
        assert copied == {
            "uri": "s3://driftline-lake/lake",
            "objects": 1,
            "export": str(tmp_path / "prod" / "s3" / "lake"),
        }
        exported = lake.partition_file(copied["export"], "predictions", "log", ANCHOR)
        assert lake.read_file(exported).equals(table)
    finally:
        for key in objects(client, bucket):
            if key.startswith("lake/"):
                client.delete_object(Bucket=bucket, Key=key)
        if bucket not in existing and not objects(client, bucket):
            client.delete_bucket(Bucket=bucket)
