"""The committed DVC remote ``s3`` against an S3 API (moto): push, then pull elsewhere.

A checkout with the repository's own ``.dvc/config`` reproduces a one-stage pipeline
with the real ``dvc`` CLI, pushes its output with :func:`driftline.orchestration.
dvc_remote.push` (what the production profile calls), and a fresh checkout, with no
cache of its own and only what git would hold (``.dvc/config``, ``dvc.yaml``,
``dvc.lock``), gets the same bytes back with ``dvc pull -r s3``. The endpoint comes from
the environment only, as in the profile.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from driftline.orchestration import dvc_remote, prod
from tests.infra.conftest import REPO_ROOT, Moto

pytestmark = pytest.mark.timeout(600)

#: A one-stage pipeline whose output is a folder of two files.
DVC_YAML = """\
stages:
  tiny:
    cmd: python -c "import pathlib; p = pathlib.Path('out'); p.mkdir(exist_ok=True);
      (p / 'a.csv').write_text('id,amount\\n1,9.5\\n'); (p / 'b.csv').write_text('id\\n2\\n')"
    outs:
      - out
"""


def _env(moto: Moto, tmp_path: Path) -> dict[str, str]:
    """The profile's kind of S3 environment: endpoint and credentials, nothing else (no
    profile or credentials file of the machine)."""
    empty = tmp_path / "aws-config"
    empty.touch()
    return {
        **prod.S3_CREDENTIALS,
        "AWS_ENDPOINT_URL_S3": moto.endpoint,
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _checkout(path: Path) -> Path:
    """A git checkout holding the repository's ``.dvc/config`` (its remotes)."""
    (path / ".dvc").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / ".dvc" / "config", path / ".dvc" / "config")
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    return path


def _keys(moto: Moto, bucket: str) -> list[str]:
    listing = moto.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_a_tracked_output_is_pushed_to_s3_and_pulled_into_a_fresh_checkout(
    moto_server: Moto, tmp_path: Path
) -> None:
    bucket = prod.BUCKETS["dvc"]
    prod.create_buckets(moto_server.endpoint)  # the profile's buckets
    for key in _keys(moto_server, bucket):  # an earlier run's objects in this session
        moto_server.client("s3").delete_object(Bucket=bucket, Key=key)
    env = _env(moto_server, tmp_path)
    work = _checkout(tmp_path / "work")
    (work / "dvc.yaml").write_text(DVC_YAML)
    dvc_remote.run_dvc(work, ["repro"], env)
    assert (work / "out" / "a.csv").read_text() == "id,amount\n1,9.5\n"

    pushed = dvc_remote.push(work, env)

    # The committed remote is the profile's bucket, under Terraform's prefix.
    assert pushed.url == f"s3://{bucket}/dvcstore"
    keys = _keys(moto_server, bucket)
    assert pushed.pushed == 3 == len(keys), keys  # two files and the folder's listing
    assert all(key.startswith("dvcstore/files/md5/") for key in keys), keys
    assert sum(key.endswith(".dir") for key in keys) == 1, keys
    assert dvc_remote.push(work, env).pushed == 0  # nothing twice
    assert _keys(moto_server, bucket) == keys

    fresh = _checkout(tmp_path / "fresh")
    for name in ("dvc.yaml", "dvc.lock"):
        shutil.copy2(work / name, fresh / name)
    assert not (fresh / "out").exists() and not (fresh / ".dvc" / "cache").exists()
    dvc_remote.run_dvc(fresh, ["pull", "-r", dvc_remote.REMOTE], env)

    for name in ("a.csv", "b.csv"):
        assert (fresh / "out" / name).read_bytes() == (work / "out" / name).read_bytes()
    assert "up to date" in dvc_remote.run_dvc(fresh, ["status"], env).lower()


def test_an_unreachable_endpoint_fails_loudly(moto_server: Moto, tmp_path: Path) -> None:
    work = _checkout(tmp_path / "work")
    (work / "dvc.yaml").write_text(DVC_YAML)
    env = _env(moto_server, tmp_path)
    dvc_remote.run_dvc(work, ["repro"], env)
    closed = {**env, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}  # discard port: refused

    with pytest.raises(dvc_remote.DvcError, match="push"):
        dvc_remote.push(work, closed)
