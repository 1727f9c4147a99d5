# IAM roles for Kubernetes service accounts (IRSA), one per service, each granted only
# the bucket prefixes its stage functions touch:
#
#   role      lake bucket                                   mlflow bucket
#   airflow   rw lake/*, feast/*, airflow-logs/*            read (staging gate, drift)
#   mlflow    -                                             rw (artifact store)
#   training  read lake/features/*, feast/*                 rw (models, metrics)
#   serving   read feast/*, write lake/predictions/*        read (champion/canary)
#
# Nobody but an operator touches the DVC remote bucket from the cluster.

locals {
  grants = {
    airflow = [
      { bucket = "lake", prefix = "lake/", write = true },
      { bucket = "lake", prefix = "feast/", write = true },
      { bucket = "lake", prefix = "airflow-logs/", write = true },
      { bucket = "mlflow", prefix = "", write = false },
    ]
    mlflow = [
      { bucket = "mlflow", prefix = "", write = true },
    ]
    training = [
      { bucket = "lake", prefix = "lake/features/", write = false },
      { bucket = "lake", prefix = "feast/", write = false },
      { bucket = "mlflow", prefix = "", write = true },
    ]
    serving = [
      { bucket = "lake", prefix = "feast/", write = false },
      { bucket = "lake", prefix = "lake/predictions/", write = true },
      { bucket = "mlflow", prefix = "", write = false },
    ]
  }
}

data "aws_iam_policy_document" "assume" {
  for_each = local.grants

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = [for sa in var.service_accounts[each.key] : "system:serviceaccount:${sa}"]
    }
  }
}

data "aws_iam_policy_document" "access" {
  for_each = local.grants

  statement {
    sid     = "ReadObjects"
    actions = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = [
      for g in each.value : "${var.bucket_arns[g.bucket]}/${g.prefix}*"
    ]
  }

  dynamic "statement" {
    for_each = anytrue([for g in each.value : g.write]) ? [1] : []
    content {
      sid     = "WriteObjects"
      actions = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      resources = [
        for g in each.value : "${var.bucket_arns[g.bucket]}/${g.prefix}*" if g.write
      ]
    }
  }

  dynamic "statement" {
    for_each = each.value
    content {
      sid       = "List${title(statement.value.bucket)}${statement.key}"
      actions   = ["s3:ListBucket"]
      resources = [var.bucket_arns[statement.value.bucket]]
      dynamic "condition" {
        for_each = statement.value.prefix == "" ? [] : [1]
        content {
          test     = "StringLike"
          variable = "s3:prefix"
          values   = [statement.value.prefix, "${statement.value.prefix}*"]
        }
      }
    }
  }

  statement {
    sid = "UseBucketKey"
    actions = concat(
      ["kms:Decrypt", "kms:DescribeKey"],
      anytrue([for g in each.value : g.write]) ? ["kms:GenerateDataKey"] : [],
    )
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "this" {
  for_each = local.grants

  name               = "${var.name}-${each.key}"
  description        = "IRSA role of the ${each.key} service account(s)"
  assume_role_policy = data.aws_iam_policy_document.assume[each.key].json
  tags               = var.tags
}

resource "aws_iam_role_policy" "access" {
  for_each = local.grants

  name   = "bucket-access"
  role   = aws_iam_role.this[each.key].id
  policy = data.aws_iam_policy_document.access[each.key].json
}
