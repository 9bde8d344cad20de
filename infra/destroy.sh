#!/usr/bin/env bash
# Tears agentgraph down in one project (the Terraform workspace deploy.sh made for it).
#
#   infra/destroy.sh PROJECT [REGION] [extra terraform destroy arguments...]
#
# The Firestore database and its data are kept (delete protection) unless DELETE_DATA=1, which
# first turns the protection off, then deletes the database with everything else.
# AUTO_APPROVE=1 skips the prompts. APIs stay enabled; the Gemini key secret is not touched.
set -euo pipefail

# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

command -v terraform >/dev/null || { echo "destroy.sh: terraform is not installed" >&2; exit 2; }

terraform -chdir="$here" init -input=false
if ! terraform -chdir="$here" workspace select "$project"; then
  echo "destroy.sh: no Terraform workspace for $project: nothing deployed from this checkout." >&2
  exit 2
fi

protect=true
[[ "${DELETE_DATA:-0}" == 1 ]] && protect=false

vars=(
  -var "project=$project"
  -var "region=$region"
  -var "gemini_key_secret=${GEMINI_KEY_SECRET:-gemini-api-key}"
  -var "source_archive=${SOURCE_ARCHIVE:-$repo/build/function-source.zip}"
  -var "firestore_delete_protection=$protect"
)

if [[ "$protect" == false ]]; then
  # Deletion policy and protection are read from the state at destroy time: record them first.
  terraform -chdir="$here" apply -input=false "${approve[@]}" "${vars[@]}" \
    -target=module.agentgraph.google_firestore_database.db
fi

terraform -chdir="$here" destroy -input=false "${approve[@]}" "${vars[@]}" "$@"

if [[ "$protect" == true ]]; then
  echo "The Firestore database was kept with its data (DELETE_DATA=1 deletes it too)."
fi
