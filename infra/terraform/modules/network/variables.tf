variable "name" {
  description = "Name prefix for every network resource."
  type        = string
}

variable "cidr" {
  description = "CIDR block of the VPC."
  type        = string
}

variable "azs" {
  description = "Availability zones; one public and one private subnet is created in each."
  type        = list(string)

  validation {
    condition     = length(var.azs) >= 2
    error_message = "EKS and RDS subnet groups need at least two availability zones."
  }
}

variable "single_nat_gateway" {
  description = "One shared NAT gateway (cheap, dev) instead of one per availability zone (prod)."
  type        = bool
  default     = true
}

variable "cluster_name" {
  description = "EKS cluster name, used for the subnet discovery tags of the load balancer controller."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "lb_ingress_cidrs" {
  description = "Who may reach the load balancers on 443 (the only internet-facing port)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}
