output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "CIDR block of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "Public subnets (load balancers and NAT gateways only)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets for every workload."
  value       = aws_subnet.private[*].id
}

output "lb_security_group_id" {
  description = "Security group for internet-facing load balancers (443 only)."
  value       = aws_security_group.lb.id
}
