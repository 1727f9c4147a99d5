# The platform (modules/platform) with the prod sizes from variables.tf.

module "platform" {
  source = "../../modules/platform"

  environment             = var.environment
  region                  = var.region
  azs                     = var.azs
  vpc_cidr                = var.vpc_cidr
  single_nat_gateway      = var.single_nat_gateway
  enable_eks              = var.enable_eks
  enable_cache            = var.enable_cache
  kubernetes_version      = var.kubernetes_version
  api_public_access_cidrs = var.api_public_access_cidrs
  cpu_instance_types      = var.cpu_instance_types
  cpu_scaling             = var.cpu_scaling
  gpu_instance_types      = var.gpu_instance_types
  gpu_scaling             = var.gpu_scaling
  db_instance_class       = var.db_instance_class
  db_allocated_storage    = var.db_allocated_storage
  db_multi_az             = var.db_multi_az
  db_deletion_protection  = var.db_deletion_protection
  cache_node_type         = var.cache_node_type
  cache_replicas          = var.cache_replicas
  force_destroy           = var.force_destroy
  spark_master            = var.spark_master
  image_tag               = var.image_tag
}
