# The platform's outputs (described in modules/platform/outputs.tf).

output "driftline_env" {
  value = module.platform.driftline_env
}

output "region" {
  value = module.platform.region
}

output "cluster_name" {
  value = module.platform.cluster_name
}

output "irsa_role_arns" {
  value = module.platform.irsa_role_arns
}

output "bucket_names" {
  value = module.platform.bucket_names
}

output "ecr_repository_urls" {
  value = module.platform.ecr_repository_urls
}

output "db_address" {
  value = module.platform.db_address
}

output "db_master_secret_arn" {
  value = module.platform.db_master_secret_arn
}

output "lb_security_group_id" {
  value = module.platform.lb_security_group_id
}
