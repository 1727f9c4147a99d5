output "driftline_env" {
  description = "Contents of driftline.env (the app's DRIFTLINE_* settings); write it with infra/terraform/scripts/write-env.sh."
  value = templatefile("${path.module}/../../templates/driftline.env.tftpl", {
    environment    = var.environment
    region         = var.region
    lake_bucket    = module.storage.bucket_names["lake"]
    mlflow_bucket  = module.storage.bucket_names["mlflow"]
    dvc_bucket     = module.storage.bucket_names["dvc"]
    db_host        = module.database.address
    db_port        = module.database.port
    db_user        = module.database.username
    db_secret_arn  = coalesce(module.database.master_user_secret_arn, "see the RDS console")
    redis_url      = var.enable_cache ? module.cache[0].connection_string : ""
    spark_master   = var.spark_master
    platform_image = "${module.ecr.repository_urls["platform"]}:${var.image_tag}"
    training_image = "${module.ecr.repository_urls["training"]}:${var.image_tag}"
  })
}

output "region" {
  description = "AWS region of the environment."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = var.enable_eks ? module.eks[0].cluster_name : null
}

output "irsa_role_arns" {
  description = "IRSA role ARNs by service; annotate the Kubernetes service accounts with them."
  value       = var.enable_eks ? module.iam[0].role_arns : {}
}

output "bucket_names" {
  description = "Bucket names by purpose (lake, mlflow, dvc)."
  value       = module.storage.bucket_names
}

output "ecr_repository_urls" {
  description = "ECR repository URLs by image (platform, training)."
  value       = module.ecr.repository_urls
}

output "db_address" {
  description = "PostgreSQL host."
  value       = module.database.address
}

output "db_master_secret_arn" {
  description = "Secrets Manager secret with the PostgreSQL master password (key \"password\")."
  value       = module.database.master_user_secret_arn
}

output "lb_security_group_id" {
  description = "Security group for internet-facing load balancers (443 only)."
  value       = module.network.lb_security_group_id
}

output "tags" {
  description = "Tags of every resource (Project, Environment, ManagedBy); the environments set them as the provider's default_tags."
  value       = local.tags
}
