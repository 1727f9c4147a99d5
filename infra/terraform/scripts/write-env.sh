#!/usr/bin/env bash
# Write the app settings of one environment from its Terraform outputs.
#
#   infra/terraform/scripts/write-env.sh infra/terraform/envs/prod [driftline.env]
#
# The file holds no secrets (the database password stays in Secrets Manager), so it
# can become a ConfigMap: kubectl create configmap driftline-settings --from-env-file=...
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 <terraform env dir> [output file, default driftline.env]" >&2
  exit 2
fi

env_dir=$1
out=${2:-driftline.env}
tmp="$(mktemp "${out}.XXXXXX")"
trap 'rm -f "${tmp}"' EXIT

terraform -chdir="${env_dir}" output -raw driftline_env > "${tmp}"
mv "${tmp}" "${out}"
trap - EXIT
echo "wrote ${out}" >&2
