terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 6.0"
    }
  }

  # State is local until you copy backend.tf.example to backend.tf (see that file and
  # docs/deployment.md); the emulator tests always run with local state.
}

provider "aws" {
  region = var.region

  default_tags {
    tags = module.platform.tags
  }
}
