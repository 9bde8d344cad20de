#!/usr/bin/env bash
# Deploys agentgraph with Terraform into one project.
#
#   infra/deploy.sh PROJECT [REGION] [extra terraform apply arguments...]
#   PROJECT=my-proj REGION=europe-west1 infra/deploy.sh
#
# Environment: GEMINI_KEY_SECRET (default gemini-api-key), SOURCE_ARCHIVE (default
# build/function-source.zip, made by `make package`), AUTO_APPROVE=1 to skip the prompt.
# Each project gets its own Terraform workspace, so one checkout can deploy several projects
# without one state overwriting another.
set -euo pipefail

# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

secret="${GEMINI_KEY_SECRET:-gemini-api-key}"
archive="${SOURCE_ARCHIVE:-$repo/build/function-source.zip}"

for tool in terraform gcloud; do
  command -v "$tool" >/dev/null || { echo "deploy.sh: $tool is not installed" >&2; exit 2; }
done
if [[ ! -f "$archive" ]]; then
  echo "deploy.sh: $archive does not exist: build it with \`make package\` first." >&2
  exit 2
fi

# What Terraform needs before it can enable the other APIs itself, and where the key lives.
gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com \
  secretmanager.googleapis.com --project "$project"

if ! gcloud secrets describe "$secret" --project "$project" >/dev/null 2>&1; then
  cat >&2 <<MSG
deploy.sh: the secret "$secret" does not exist in project $project. Create it with the key:
  printf %s "\$GEMINI_API_KEY" | gcloud secrets create $secret --project $project \\
      --replication-policy=automatic --data-file=-
MSG
  exit 2
fi

terraform -chdir="$here" init -input=false
terraform -chdir="$here" workspace select -or-create "$project"

terraform -chdir="$here" apply -input=false "${approve[@]}" \
  -var "project=$project" \
  -var "region=$region" \
  -var "gemini_key_secret=$secret" \
  -var "source_archive=$archive" \
  "$@"

echo
echo "api: $(terraform -chdir="$here" output -raw api_url)"

# The web console, when it is built (`make deploy` builds it).
if [[ -f "$repo/web/dist/index.html" ]]; then
  "$here/hosting.sh" "$project" "$region"
fi
