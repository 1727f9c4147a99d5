output "role_arns" {
  description = "IRSA role ARNs by service (airflow, mlflow, training, serving); annotate the service accounts with them."
  value       = { for k, r in aws_iam_role.this : k => r.arn }
}
