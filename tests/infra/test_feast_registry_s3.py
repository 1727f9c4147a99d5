"""The Feast registry on S3 (moto), as the production profile configures it.

``feast apply`` through :func:`driftline.data.feast.apply_definitions` with
``feast_registry`` an ``s3://`` URI writes the registry object to the bucket (and no
local registry file); a store built afresh, as every other process of the profile builds
one, reads the same definitions back. Feast's S3 registry store takes its endpoint from
``FEAST_S3_ENDPOINT_URL`` only, which the profile's environment sets; the local online
store (SQLite) keeps the test free of Redis.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.core.settings import Settings
from driftline.data.feast import FEATURE_SERVICE, apply_definitions, get_store
from driftline.orchestration import prod
from tests.infra.conftest import Moto

pytestmark = pytest.mark.timeout(300)

BUCKET, _, KEY = prod.FEAST_REGISTRY.removeprefix("s3://").partition("/")


def test_feast_apply_writes_the_registry_to_s3_and_a_fresh_store_reads_it(
    moto_server: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast.protos.feast.core.Registry_pb2 import Registry

    prod.create_buckets(moto_server.endpoint)  # the profile's buckets
    s3 = moto_server.client("s3")
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": KEY}]})  # an earlier run's
    for name, value in prod.S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)  # Feast's own variable alone
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("FEAST_S3_ENDPOINT_URL", moto_server.endpoint)
    home = tmp_path / "home"
    settings = Settings(home=home, feast_registry=prod.FEAST_REGISTRY)

    applied = apply_definitions(settings)

    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="feast/").get("Contents", [])
    assert [item["Key"] for item in listing] == [KEY]
    registry = Registry()
    registry.ParseFromString(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())
    on_s3 = sorted(view.spec.name for view in registry.feature_views)
    assert on_s3 and on_s3 == sorted(view.name for view in applied.list_feature_views())
    assert not list(home.rglob("registry.db"))  # nothing on local files

    fresh = get_store(settings)  # another process's store: the registry from S3
    assert sorted(view.name for view in fresh.list_feature_views()) == on_s3
    assert fresh.get_feature_service(FEATURE_SERVICE).name == FEATURE_SERVICE
