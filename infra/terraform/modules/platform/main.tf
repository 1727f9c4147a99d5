# The whole platform for one environment: every module, wired once. The environments
# (envs/dev, envs/prod) only call this module with their sizes.

data "aws_caller_identity" "current" {}

locals {
  name = "driftline-${var.environment}"
  # Bucket names are global: suffix them with the account id.
  bucket_prefix = "${local.name}-${data.aws_caller_identity.current.account_id}"
  tags = {
    Project     = "driftline"
    Environment = var.environment
    ManagedBy   = "terraform"
  }
  # Databases and Redis admit the cluster's nodes only (EKS attaches the cluster
  # security group to the managed nodes). compact(): emulators leave it empty.
  client_security_group_ids = var.enable_eks ? compact([module.eks[0].cluster_security_group_id]) : []
}

module "network" {
  source = "../network"

  name               = local.name
  cidr               = var.vpc_cidr
  azs                = var.azs
  single_nat_gateway = var.single_nat_gateway
  cluster_name       = local.name
  tags               = local.tags
}

module "eks" {
  source = "../eks"
  count  = var.enable_eks ? 1 : 0

  name                = local.name
  kubernetes_version  = var.kubernetes_version
  vpc_id              = module.network.vpc_id
  vpc_cidr            = module.network.vpc_cidr
  subnet_ids          = module.network.private_subnet_ids
  public_access_cidrs = var.api_public_access_cidrs
  cpu_instance_types  = var.cpu_instance_types
  cpu_scaling         = var.cpu_scaling
  gpu_instance_types  = var.gpu_instance_types
  gpu_scaling         = var.gpu_scaling
  tags                = local.tags
}

module "storage" {
  source = "../storage"

  name          = local.bucket_prefix
  force_destroy = var.force_destroy
  tags          = local.tags
}

module "database" {
  source = "../database"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = local.client_security_group_ids
  instance_class             = var.db_instance_class
  allocated_storage          = var.db_allocated_storage
  multi_az                   = var.db_multi_az
  deletion_protection        = var.db_deletion_protection
  skip_final_snapshot        = var.force_destroy
  tags                       = local.tags
}

module "cache" {
  source = "../cache"
  count  = var.enable_cache ? 1 : 0

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = local.client_security_group_ids
  node_type                  = var.cache_node_type
  replicas                   = var.cache_replicas
  tags                       = local.tags
}

module "ecr" {
  source = "../ecr"

  repositories = {
    platform = "driftline-platform"
    training = "driftline-training"
  }
  force_delete = var.force_destroy
  tags         = local.tags
}

module "iam" {
  source = "../iam"
  count  = var.enable_eks ? 1 : 0

  name              = local.name
  oidc_provider_arn = module.eks[0].oidc_provider_arn
  oidc_issuer       = module.eks[0].oidc_issuer
  bucket_arns       = module.storage.bucket_arns
  kms_key_arn       = module.storage.kms_key_arn
  tags              = local.tags
}
