output "repository_urls" {
  description = "Repository URLs by image role (platform, training)."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}
