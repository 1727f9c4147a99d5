variable "name" {
  description = "Prefix of the role names."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider."
  type        = string
}

variable "oidc_issuer" {
  description = "OIDC issuer without scheme (oidc.eks.<region>.amazonaws.com/id/<id>)."
  type        = string
}

variable "bucket_arns" {
  description = "Bucket ARNs by purpose, as output by the storage module (lake, mlflow, dvc)."
  type        = map(string)
}

variable "kms_key_arn" {
  description = "KMS key encrypting the buckets."
  type        = string
}

variable "service_accounts" {
  description = "Kubernetes service accounts (namespace:name) allowed to assume each role."
  type        = map(list(string))
  default = {
    airflow = [
      "airflow:airflow-worker",
      "airflow:airflow-scheduler",
      "airflow:airflow-triggerer",
      "airflow:airflow-api-server",
    ]
    mlflow   = ["driftline:mlflow"]
    training = ["kubeflow:pipeline-runner"]
    serving  = ["driftline:driftline-serve"]
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
