"""Terraform: formatting, validation, plan-level policy checks and a real apply/destroy
of ``envs/dev`` against a moto server.

What moto (5.x) can and cannot stand in for, found by applying the real configuration:

* applied for real: VPC, subnets, internet/NAT gateways, EIP, routes, security groups,
  KMS keys, S3 buckets (+ versioning, SSE-KMS, public access block, policy, lifecycle),
  RDS PostgreSQL (+ subnet/parameter group, Secrets Manager managed password), ECR
  repositories and lifecycle policies, IAM roles/policies/OIDC provider, the EKS cluster
  and both managed node groups;
* not applied: ElastiCache. moto creates a replication group without its member cache
  clusters (the provider's read of ``<id>-001`` fails) and does not implement
  DeleteCacheSubnetGroup, so the emulator apply runs with ``enable_cache=false`` and the
  Redis settings are checked on the plan instead.

moto also returns an empty ``cluster_security_group_id`` for EKS, so the database
security group admits nothing in the emulator (the env compacts the list).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .conftest import ENVS, TERRAFORM_DIR, Moto, Terraform

OPEN_CIDRS = {"0.0.0.0/0", "::/0"}
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def iter_resources(module: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every resource of a ``planned_values``/``values`` module tree, children included."""
    yield from module.get("resources", [])
    for child in module.get("child_modules", []):
        yield from iter_resources(child)


def module_of(resource: dict[str, Any]) -> str:
    """Module address of a resource ('' for the root module)."""
    suffix = f"{resource['type']}.{resource['name']}"
    address: str = resource["address"]
    return address[: address.index(suffix)].rstrip(".")


def by_type(resources: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["type"] == type_ and r.get("mode", "managed") == "managed"]


def sibling(resources: list[dict[str, Any]], of: dict[str, Any], type_: str) -> dict[str, Any]:
    """The resource of ``type_`` in the same module with the same for_each key."""
    matches = [
        r
        for r in by_type(resources, type_)
        if module_of(r) == module_of(of) and r.get("index") == of.get("index")
    ]
    assert len(matches) == 1, f"expected one {type_} beside {of['address']}, got {matches}"
    return matches[0]


# --------------------------------------------------------------------------- fixtures


def for_each_env(work: Callable[[str], T]) -> dict[str, T]:
    """``work(env)`` for every environment at once (one thread each).

    Terraform mostly waits in a plan (provider start, the moto server), and each
    environment plans in its own directory, so the environments run side by side.
    """
    with ThreadPoolExecutor(max_workers=len(ENVS)) as pool:
        done = {env: pool.submit(work, env) for env in ENVS}
        return {env: future.result() for env, future in done.items()}


@pytest.fixture(scope="session")
def initialized(terraform: Terraform, terraform_tree: Path) -> dict[str, Path]:
    """Each environment of the scratch tree, initialized once (local state).

    One after the other: they share the plugin cache, which Terraform does not promise
    to be safe for concurrent installs (an init takes about 2 s anyway).
    """
    dirs = {}
    for env in ENVS:
        path = terraform_tree / "envs" / env
        terraform.init(path, backend=False)
        dirs[env] = path
    return dirs


@pytest.fixture(scope="session")
def plans(
    terraform: Terraform, initialized: dict[str, Path], moto_server: Moto
) -> dict[str, list[dict[str, Any]]]:
    """Planned resources of every environment with its default (real) variables.

    The plan reads data sources (account id), so the provider talks to moto; nothing is
    created.
    """

    def plan(env: str) -> list[dict[str, Any]]:
        path = initialized[env]
        (path / "override.tf").write_text(moto_server.provider_override())
        terraform.run(["plan", "-input=false", "-no-color", "-out=plan.out"], path)
        shown = terraform.show_json(path, "plan.out")
        return list(iter_resources(shown["planned_values"]["root_module"]))

    return for_each_env(plan)


# ------------------------------------------------------------------ static checks


def test_fmt_check(terraform: Terraform) -> None:
    proc = terraform.run(["fmt", "-check", "-recursive", "-diff", "-no-color"], TERRAFORM_DIR)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("env", ENVS)
def test_validate(terraform: Terraform, initialized: dict[str, Path], env: str) -> None:
    proc = terraform.run(["validate", "-json", "-no-color"], initialized[env])
    result = json.loads(proc.stdout)
    assert result["valid"], result["diagnostics"]
    assert result["warning_count"] == 0, result["diagnostics"]


# --------------------------------------------------------------- plan-level policy


@pytest.mark.parametrize("env", ENVS)
def test_buckets_versioned_encrypted_and_private(
    plans: dict[str, list[dict[str, Any]]], env: str
) -> None:
    resources = plans[env]
    buckets = by_type(resources, "aws_s3_bucket")
    assert {b["index"] for b in buckets} == {"lake", "mlflow", "dvc"}
    for bucket in buckets:
        sse = sibling(resources, bucket, "aws_s3_bucket_server_side_encryption_configuration")
        default = sse["values"]["rule"][0]["apply_server_side_encryption_by_default"][0]
        assert default["sse_algorithm"] in {"aws:kms", "AES256"}, bucket["address"]

        block = sibling(resources, bucket, "aws_s3_bucket_public_access_block")["values"]
        for flag in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        ):
            assert block[flag] is True, (bucket["address"], flag)

        versioning = sibling(resources, bucket, "aws_s3_bucket_versioning")["values"]
        assert versioning["versioning_configuration"][0]["status"] == "Enabled"


@pytest.mark.parametrize("env", ENVS)
def test_old_raw_partitions_move_to_cheaper_tiers(
    plans: dict[str, list[dict[str, Any]]], env: str
) -> None:
    lake = next(b for b in by_type(plans[env], "aws_s3_bucket") if b["index"] == "lake")
    lifecycle = sibling(plans[env], lake, "aws_s3_bucket_lifecycle_configuration")["values"]
    raw_rules = [
        rule
        for rule in lifecycle["rule"]
        if rule["filter"] and rule["filter"][0].get("prefix") == "lake/raw/"
    ]
    assert len(raw_rules) == 1
    rule = raw_rules[0]
    assert rule["status"] == "Enabled"
    tiers = sorted((t["days"], t["storage_class"]) for t in rule["transition"])
    assert [cls for _, cls in tiers] == ["STANDARD_IA", "GLACIER_IR"]


@pytest.mark.parametrize("env", ENVS)
def test_database_private_encrypted_no_password_in_config(
    plans: dict[str, list[dict[str, Any]]], env: str
) -> None:
    (db,) = by_type(plans[env], "aws_db_instance")
    values = db["values"]
    assert values["publicly_accessible"] is False
    assert values["storage_encrypted"] is True
    assert values["manage_master_user_password"] is True
    assert values.get("password") in (None, "")


@pytest.mark.parametrize("env", ENVS)
def test_only_load_balancer_https_is_open_to_the_internet(
    plans: dict[str, list[dict[str, Any]]], env: str
) -> None:
    resources = plans[env]
    open_rules = []
    for sg in by_type(resources, "aws_security_group"):
        for rule in sg["values"].get("ingress") or []:
            cidrs = set(rule.get("cidr_blocks") or []) | set(rule.get("ipv6_cidr_blocks") or [])
            if cidrs & OPEN_CIDRS:
                open_rules.append(
                    (sg["values"]["name"], rule["protocol"], rule["from_port"], rule["to_port"])
                )
    for rule in by_type(resources, "aws_security_group_rule"):
        cidrs = set(rule["values"].get("cidr_blocks") or [])
        assert not (rule["values"]["type"] == "ingress" and cidrs & OPEN_CIDRS), rule["address"]
    for rule in by_type(resources, "aws_vpc_security_group_ingress_rule"):
        assert rule["values"].get("cidr_ipv4") not in OPEN_CIDRS, rule["address"]
        assert rule["values"].get("cidr_ipv6") not in OPEN_CIDRS, rule["address"]

    assert open_rules == [(f"driftline-{env}-lb", "tcp", 443, 443)]


@pytest.mark.parametrize("env", ENVS)
def test_gpu_node_group_tainted_and_scales_to_zero(
    plans: dict[str, list[dict[str, Any]]], env: str
) -> None:
    groups = {
        g["values"]["node_group_name"]: g["values"]
        for g in by_type(plans[env], "aws_eks_node_group")
    }
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in gpu["taint"]
    assert gpu["scaling_config"][0]["min_size"] == 0
    assert "NVIDIA" in gpu["ami_type"]
    assert not groups["cpu"].get("taint")


@pytest.mark.parametrize("env", ENVS)
def test_kubernetes_api_is_private(plans: dict[str, list[dict[str, Any]]], env: str) -> None:
    (cluster,) = by_type(plans[env], "aws_eks_cluster")
    vpc = cluster["values"]["vpc_config"][0]
    assert vpc["endpoint_private_access"] is True
    assert vpc["endpoint_public_access"] is False
    assert cluster["values"]["encryption_config"][0]["resources"] == ["secrets"]


@pytest.mark.parametrize("env", ENVS)
def test_redis_encrypted(plans: dict[str, list[dict[str, Any]]], env: str) -> None:
    # Plan-level only: moto cannot apply ElastiCache (module docstring).
    (redis,) = by_type(plans[env], "aws_elasticache_replication_group")
    # The provider types this attribute as a string.
    assert str(redis["values"]["at_rest_encryption_enabled"]).lower() == "true"
    assert redis["values"]["transit_encryption_enabled"] is True


def test_prod_is_resilient_and_dev_is_disposable(
    plans: dict[str, list[dict[str, Any]]],
) -> None:
    def one(env: str, type_: str) -> dict[str, Any]:
        (resource,) = by_type(plans[env], type_)
        values: dict[str, Any] = resource["values"]
        return values

    assert one("prod", "aws_db_instance")["multi_az"] is True
    assert one("prod", "aws_db_instance")["deletion_protection"] is True
    assert one("prod", "aws_elasticache_replication_group")["automatic_failover_enabled"] is True
    assert len(by_type(plans["prod"], "aws_nat_gateway")) == 3
    assert one("dev", "aws_db_instance")["deletion_protection"] is False
    assert len(by_type(plans["dev"], "aws_nat_gateway")) == 1
    assert all(b["values"]["force_destroy"] for b in by_type(plans["dev"], "aws_s3_bucket"))
    assert not any(b["values"]["force_destroy"] for b in by_type(plans["prod"], "aws_s3_bucket"))


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("gpu_scaling={min=1,desired=1,max=2}", "must scale to zero"),
        ('api_public_access_cidrs=["0.0.0.0/0"]', "must not be open to the whole internet"),
    ],
)
def test_unsafe_settings_are_rejected(
    terraform: Terraform,
    plans: dict[str, list[dict[str, Any]]],
    initialized: dict[str, Path],
    variable: str,
    message: str,
) -> None:
    proc = terraform.run(
        ["plan", "-input=false", "-no-color", "-var", variable], initialized["dev"], check=False
    )
    assert proc.returncode != 0
    assert message in " ".join(proc.stderr.split())


# ------------------------------------------------------------ apply against moto


def _policy(document: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(document) if isinstance(document, str) else document
    return doc


def _statements(document: Any) -> list[dict[str, Any]]:
    statements = _policy(document)["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def _write_resources(statements: list[dict[str, Any]]) -> set[str]:
    return {
        resource
        for s in statements
        if "s3:PutObject" in _as_list(s["Action"])
        for resource in _as_list(s["Resource"])
    }


@pytest.mark.slow
def test_apply_and_destroy_dev_against_moto(
    terraform: Terraform, moto_server: Moto, tmp_path: Path
) -> None:
    work = tmp_path / "terraform"
    shutil.copytree(
        TERRAFORM_DIR,
        work,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "override.tf", "backend.tf"),
    )
    env_dir = work / "envs" / "dev"
    (env_dir / "override.tf").write_text(moto_server.provider_override())
    moto_server.reset()
    terraform.init(env_dir)
    # ElastiCache off: moto cannot create or delete it (see the module docstring).
    emulator_vars = ["-var", "enable_cache=false"]
    terraform.run(
        ["apply", "-auto-approve", "-input=false", "-no-color", "-parallelism=30", *emulator_vars],
        env_dir,
    )
    try:
        outputs = {
            k: v["value"]
            for k, v in json.loads(
                terraform.run(["output", "-json", "-no-color"], env_dir).stdout
            ).items()
        }
        _check_settings_file(terraform, env_dir, tmp_path, outputs)
        _check_applied_resources(moto_server, outputs)
    finally:
        # No refresh before the destroy: the state was written by the apply above (and
        # read back through the AWS APIs since), so refreshing it would only re-read
        # every resource from moto first (a plan walk of about 12 s). What the destroy
        # removes, and what the checks below read back, is the same.
        terraform.run(
            [
                "destroy",
                "-auto-approve",
                "-input=false",
                "-no-color",
                "-refresh=false",
                "-parallelism=30",
                *emulator_vars,
            ],
            env_dir,
        )
    state = terraform.run(["state", "list", "-no-color"], env_dir, check=False)
    assert state.stdout.strip() == ""
    left = {b["Name"] for b in moto_server.client("s3").list_buckets().get("Buckets", [])}
    assert not {name for name in left if name.startswith("driftline-dev")}


def _check_settings_file(
    terraform: Terraform, env_dir: Path, tmp_path: Path, outputs: dict[str, Any]
) -> None:
    """The rendered driftline.env configures the real settings object."""
    from driftline.core import images
    from driftline.core.settings import Settings

    env_file = tmp_path / "driftline.env"
    script_env = dict(terraform.env)
    script_env["PATH"] = f"{Path(terraform.binary).parent}{os.pathsep}{script_env['PATH']}"
    subprocess.run(
        [str(TERRAFORM_DIR / "scripts" / "write-env.sh"), str(env_dir), str(env_file)],
        env=script_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    pairs = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    buckets = outputs["bucket_names"]
    lake = buckets["lake"]
    assert pairs["DRIFTLINE_MLFLOW_ARTIFACT_URI"] == f"s3://{buckets['mlflow']}/artifacts"
    assert pairs["DRIFTLINE_DVC_REMOTE_URI"].startswith(f"s3://{buckets['dvc']}/")
    # No password anywhere: URIs carry the user only, libpq takes PGPASSWORD.
    for key in ("DRIFTLINE_MLFLOW_TRACKING_URI", "DRIFTLINE_OPTUNA_STORAGE"):
        assert re.fullmatch(r"postgresql://[^:@/]+@[^/]+:5432/\w+\?sslmode=require", pairs[key])
    assert outputs["db_master_secret_arn"].startswith("arn:aws:secretsmanager:")

    settings = Settings(_env_file=str(env_file))  # type: ignore[call-arg]
    assert settings.lake_uri == f"s3://{lake}/lake"
    assert settings.feast_env == "production"
    assert settings.kfp_host == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert settings.feast_registry == f"s3://{lake}/feast/registry.db"
    assert settings.mlflow_tracking_uri.endswith(
        f"{outputs['db_address']}:5432/mlflow?sslmode=require"
    )
    assert settings.optuna_storage.endswith("/optuna?sslmode=require")
    assert settings.spark_master.startswith("k8s://")

    ecr = outputs["ecr_repository_urls"]
    assert images.platform_image(pairs) == f"{ecr['platform']}:0.1.0"
    assert images.training_image(pairs) == f"{ecr['training']}:0.1.0"


def _check_applied_resources(moto: Moto, outputs: dict[str, Any]) -> None:
    """What the emulator holds after apply matches the policy (read back through AWS APIs)."""
    s3 = moto.client("s3")
    for name in outputs["bucket_names"].values():
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
        assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        assert all(block.values()), block
        assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"

    (db,) = moto.client("rds").describe_db_instances()["DBInstances"]
    assert db["PubliclyAccessible"] is False
    assert db["StorageEncrypted"] is True

    eks = moto.client("eks")
    gpu = eks.describe_nodegroup(clusterName=outputs["cluster_name"], nodegroupName="gpu")
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in gpu["nodegroup"][
        "taints"
    ]
    assert gpu["nodegroup"]["scalingConfig"]["minSize"] == 0

    # IRSA least privilege, read back from IAM.
    iam = moto.client("iam")
    bucket_arn = {k: f"arn:aws:s3:::{v}" for k, v in outputs["bucket_names"].items()}
    roles = outputs["irsa_role_arns"]
    assert set(roles) == {"airflow", "mlflow", "training", "serving"}
    expected_subjects = {
        "mlflow": ["system:serviceaccount:driftline:mlflow"],
        "serving": ["system:serviceaccount:driftline:driftline-serve"],
        "training": ["system:serviceaccount:kubeflow:pipeline-runner"],
    }
    writes = {}
    for service, arn in roles.items():
        role_name = arn.rsplit("/", 1)[1]
        trust = _statements(iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"])
        (assume,) = trust
        assert assume["Action"] == "sts:AssumeRoleWithWebIdentity"
        subjects = next(
            _as_list(v)
            for k, v in assume["Condition"]["StringEquals"].items()
            if k.endswith(":sub")
        )
        if service in expected_subjects:
            assert sorted(subjects) == expected_subjects[service]

        statements = _statements(
            iam.get_role_policy(RoleName=role_name, PolicyName="bucket-access")["PolicyDocument"]
        )
        for statement in statements:
            actions = _as_list(statement["Action"])
            assert "*" not in actions and "s3:*" not in actions, (service, statement)
            for resource in _as_list(statement["Resource"]):
                assert resource != "*", (service, statement)
                assert not resource.startswith(bucket_arn["dvc"]), (service, statement)
        writes[service] = _write_resources(statements)

    lake, mlflow = bucket_arn["lake"], bucket_arn["mlflow"]
    assert writes["serving"] == {f"{lake}/lake/predictions/*"}
    assert writes["training"] == {f"{mlflow}/*"}
    assert writes["mlflow"] == {f"{mlflow}/*"}
    assert writes["airflow"] == {f"{lake}/lake/*", f"{lake}/feast/*", f"{lake}/airflow-logs/*"}
