output "bucket_names" {
  description = "Bucket names by purpose (lake, mlflow, dvc)."
  value       = { for k, b in aws_s3_bucket.this : k => b.id }
}

output "bucket_arns" {
  description = "Bucket ARNs by purpose (lake, mlflow, dvc)."
  value       = { for k, b in aws_s3_bucket.this : k => b.arn }
}

output "kms_key_arn" {
  description = "KMS key encrypting every bucket; readers and writers need it."
  value       = aws_kms_key.data.arn
}
