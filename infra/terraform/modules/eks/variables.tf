variable "name" {
  description = "Cluster name."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and node groups."
  type        = string
  default     = "1.32"
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; the private API endpoint accepts HTTPS from inside it only."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the control plane ENIs and the nodes."
  type        = list(string)
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint; empty keeps the endpoint private."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.public_access_cidrs, "0.0.0.0/0")
    error_message = "The Kubernetes API must not be open to the whole internet."
  }
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (Airflow, MLflow, serving, Spark)."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "cpu_scaling" {
  description = "Sizes of the CPU node group."
  type = object({
    min     = number
    desired = number
    max     = number
  })
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (training and tuning pods)."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_scaling" {
  description = "Sizes of the GPU node group; min is 0 so idle GPUs cost nothing."
  type = object({
    min     = number
    desired = number
    max     = number
  })
  default = { min = 0, desired = 0, max = 2 }

  validation {
    condition     = var.gpu_scaling.min == 0
    error_message = "The GPU node group must scale to zero (min = 0)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
