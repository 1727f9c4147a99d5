"""Fixtures for the infrastructure tests: Terraform with an offline provider mirror, a
moto server standing in for AWS, a fresh S3 lake on it (``s3_lake``), and a scratch
copy of ``infra/terraform``.

Terraform never reaches a registry here: a CLI config written into a temporary folder
points provider installation at the local filesystem mirror of the image, and
``TF_PLUGIN_CACHE_DIR`` is shared by every ``init`` of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from driftline.core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "infra" / "terraform"
ENVS = ("dev", "prod")

#: Where images of this project keep the unpacked provider mirror; the first that holds
#: an AWS provider wins. DRIFTLINE_TF_PLUGIN_MIRROR overrides.
MIRROR_CANDIDATES = (
    "/opt/tf-plugins",
    "/usr/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    str(Path.home() / ".terraform.d" / "plugins"),
)

#: AWS services the configuration talks to; all are pointed at moto.
AWS_SERVICES = (
    "ec2",
    "eks",
    "elasticache",
    "ecr",
    "iam",
    "kms",
    "rds",
    "s3",
    "secretsmanager",
    "sts",
)


def find_provider_mirror() -> Path | None:
    """Return the local provider mirror holding hashicorp/aws, if there is one."""
    override = os.environ.get("DRIFTLINE_TF_PLUGIN_MIRROR")
    for candidate in ([override] if override else []) + list(MIRROR_CANDIDATES):
        root = Path(candidate)
        if any(root.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*")):
            return root
    return None


@dataclass
class Terraform:
    """Runs the terraform binary with this session's offline CLI configuration."""

    binary: str
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self, args: Sequence[str], cwd: Path, *, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run ``terraform <args>`` in ``cwd`` and fail with its output when it fails."""
        proc = subprocess.run(
            [self.binary, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"terraform {' '.join(args)} failed in {cwd} (rc={proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def init(self, cwd: Path, *, backend: bool = True) -> None:
        """``terraform init`` from the mirror (no network)."""
        args = ["init", "-input=false", "-no-color"]
        if not backend:
            args.append("-backend=false")
        self.run(args, cwd)

    def show_json(self, cwd: Path, *target: str) -> dict[str, Any]:
        """``terraform show -json`` of a plan file, or of the state without one."""
        proc = self.run(["show", "-json", "-no-color", *target], cwd)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    """Terraform with a session CLI config (filesystem mirror) and plugin cache."""
    binary = shutil.which("terraform") or (
        "/usr/local/bin/terraform" if Path("/usr/local/bin/terraform").exists() else None
    )
    if binary is None:
        pytest.skip("terraform binary not found on PATH: infrastructure tests need it")

    home = tmp_path_factory.mktemp("terraform-cli")
    cache = home / "plugin-cache"
    cache.mkdir()
    mirror = find_provider_mirror()
    if mirror is not None:
        installation = (
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path    = "{mirror}"\n'
            '    include = ["registry.terraform.io/*/*"]\n  }\n'
            '  direct {\n    exclude = ["registry.terraform.io/*/*"]\n  }\n}\n'
        )
    else:  # No mirror: let init use the registry (fails offline, which is the truth).
        installation = ""
    cli_config = home / "terraformrc"
    cli_config.write_text(installation)

    env = {key: value for key, value in os.environ.items() if not key.startswith(("TF_", "AWS_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config),
        TF_PLUGIN_CACHE_DIR=str(cache),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        # Never pick up real credentials or profiles from the machine.
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return Terraform(binary=binary, env=env)


@pytest.fixture(scope="session")
def terraform_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of ``infra/terraform`` (modules keep their relative paths)."""
    dest = tmp_path_factory.mktemp("tf") / "terraform"
    shutil.copytree(
        TERRAFORM_DIR,
        dest,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "override.tf", "backend.tf"),
    )
    return dest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Moto:
    """A running moto server."""

    endpoint: str

    def reset(self) -> None:
        """Forget every resource created so far."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` bound to this server."""
        import boto3  # moto depends on it; imported late to keep collection cheap

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="eu-west-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def provider_override(self) -> str:
        """An ``override.tf`` pointing the AWS provider of an environment at this server."""
        endpoints = "\n".join(f'    {name} = "{self.endpoint}"' for name in AWS_SERVICES)
        return (
            "# Test-only: the AWS provider talks to a local moto server.\n"
            'provider "aws" {\n'
            '  access_key                  = "test"\n'
            '  secret_key                  = "test"\n'
            "  skip_credentials_validation = true\n"
            "  skip_metadata_api_check     = true\n"
            "  s3_use_path_style           = true\n"
            f"  endpoints {{\n{endpoints}\n  }}\n"
            "}\n"
        )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto server on a free loopback port for the whole session."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = dict(os.environ)
    # AWS-managed policies (AmazonEKSClusterPolicy, ...) exist only when loaded.
    env["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start:\n{log.read_text()[-4000:]}")
                time.sleep(0.2)
        yield Moto(endpoint=endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_lake(
    settings: Settings, moto_server: Moto, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, Any, str]]:
    """Settings whose lake is a fresh bucket on the moto server; the S3 client; the bucket."""
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": moto_server.endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # an earlier instance knows no endpoint
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    client = moto_server.client("s3")
    client.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    yield settings.model_copy(update={"lake_uri": f"s3://{bucket}/lake"}), client, bucket
    s3fs.S3FileSystem.clear_instance_cache()


def keys(client: Any, bucket: str) -> list[str]:
    """Every object key in ``bucket``."""
    listed = client.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))
