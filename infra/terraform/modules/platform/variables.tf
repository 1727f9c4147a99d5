# Inputs of the platform. Sizes have no defaults: each environment sets its own.

variable "environment" {
  description = "Environment name, part of every resource name."
  type        = string
}

variable "region" {
  description = "AWS region (written to driftline.env)."
  type        = string
}

variable "azs" {
  description = "Availability zones (at least two)."
  type        = list(string)
}

variable "vpc_cidr" {
  description = "CIDR of the VPC."
  type        = string
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets."
  type        = bool
}

variable "enable_eks" {
  description = "Create the EKS cluster and its IRSA roles (off only in emulator tests)."
  type        = bool
  default     = true
}

variable "enable_cache" {
  description = "Create the ElastiCache Redis online store (off only in emulator tests)."
  type        = bool
  default     = true
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
}

variable "api_public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API; empty keeps it private."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "CPU node group instance types."
  type        = list(string)
}

variable "cpu_scaling" {
  description = "CPU node group sizes."
  type        = object({ min = number, desired = number, max = number })
}

variable "gpu_instance_types" {
  description = "GPU node group instance types."
  type        = list(string)
}

variable "gpu_scaling" {
  description = "GPU node group sizes (min must be 0)."
  type        = object({ min = number, desired = number, max = number })
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "db_allocated_storage" {
  description = "RDS storage in GiB."
  type        = number
}

variable "db_multi_az" {
  description = "RDS standby in a second AZ."
  type        = bool
}

variable "db_deletion_protection" {
  description = "Protect the database from deletion."
  type        = bool
}

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "cache_replicas" {
  description = "Redis replicas beside the primary."
  type        = number
}

variable "force_destroy" {
  description = "Let destroy remove non-empty buckets/repositories and skip the final DB snapshot."
  type        = bool
}

variable "spark_master" {
  description = "Spark master URL written to DRIFTLINE_SPARK_MASTER (Spark on the EKS cluster)."
  type        = string
  default     = "k8s://https://kubernetes.default.svc:443"
}

variable "image_tag" {
  description = "Tag of the platform and training images pushed to ECR."
  type        = string
}
