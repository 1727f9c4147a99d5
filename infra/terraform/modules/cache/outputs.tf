output "host" {
  description = "Primary endpoint host."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "Redis port."
  value       = aws_elasticache_replication_group.this.port
}

output "connection_string" {
  description = "Feast Redis connection string (host:port, plus ssl=true when TLS is on)."
  value = join(",", compact([
    "${aws_elasticache_replication_group.this.primary_endpoint_address}:${aws_elasticache_replication_group.this.port}",
    var.transit_encryption ? "ssl=true" : "",
  ]))
}
