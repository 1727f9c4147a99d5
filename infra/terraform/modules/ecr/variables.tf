variable "repositories" {
  description = "Repository names by image role (platform, training)."
  type        = map(string)
}

variable "force_delete" {
  description = "Allow deleting repositories that still hold images (dev only)."
  type        = bool
  default     = false
}

variable "keep_images" {
  description = "How many images each repository keeps."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
