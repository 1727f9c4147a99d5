# Sizes of the prod environment: multi-AZ, replicated, protected from deletion.

variable "environment" {
  description = "Environment name, part of every resource name."
  type        = string
  default     = "prod"
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "azs" {
  description = "Availability zones (at least two)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "vpc_cidr" {
  description = "CIDR of the VPC."
  type        = string
  default     = "10.30.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets."
  type        = bool
  default     = false
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
  default     = "1.32"
}

variable "api_public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API; empty keeps it private."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "CPU node group instance types."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "cpu_scaling" {
  description = "CPU node group sizes."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 3, desired = 3, max = 10 }
}

variable "gpu_instance_types" {
  description = "GPU node group instance types."
  type        = list(string)
  default     = ["g5.xlarge", "g5.2xlarge"]
}

variable "gpu_scaling" {
  description = "GPU node group sizes (min must be 0)."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 0, max = 4 }
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m6g.large"
}

variable "db_allocated_storage" {
  description = "RDS storage in GiB."
  type        = number
  default     = 100
}

variable "db_multi_az" {
  description = "RDS standby in a second AZ."
  type        = bool
  default     = true
}

variable "db_deletion_protection" {
  description = "Protect the database from deletion."
  type        = bool
  default     = true
}

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.m6g.large"
}

variable "cache_replicas" {
  description = "Redis replicas beside the primary."
  type        = number
  default     = 1
}

variable "force_destroy" {
  description = "Let destroy remove non-empty buckets/repositories and skip the final DB snapshot."
  type        = bool
  default     = false
}

variable "spark_master" {
  description = "Spark master URL written to DRIFTLINE_SPARK_MASTER (Spark on the EKS cluster)."
  type        = string
  default     = "k8s://https://kubernetes.default.svc:443"
}

variable "image_tag" {
  description = "Tag of the platform and training images pushed to ECR."
  type        = string
  default     = "0.1.0"
}
