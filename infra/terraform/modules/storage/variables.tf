variable "name" {
  description = "Prefix of the bucket names (bucket names are global: include account or org)."
  type        = string
}

variable "force_destroy" {
  description = "Allow destroying non-empty buckets (dev only)."
  type        = bool
  default     = false
}

variable "raw_infrequent_access_days" {
  description = "Age in days after which raw lake partitions move to STANDARD_IA."
  type        = number
  default     = 30
}

variable "raw_glacier_days" {
  description = "Age in days after which raw lake partitions move to GLACIER_IR."
  type        = number
  default     = 90
}

variable "noncurrent_version_days" {
  description = "Days a replaced object version is kept (partitions are replaced on rerun)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
