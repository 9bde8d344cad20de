#!/usr/bin/env bash
# Publishes the web console (web/dist, `make web`) to the deployment's Firebase Hosting site.
#
#   infra/hosting.sh PROJECT [REGION]
#
# Run by deploy.sh after `terraform apply`: reads the site and the Firebase web config from
# the Terraform outputs, writes config.json beside the built files, and deploys them with
# firebase-tools (npm), whose firebase.json sends /api/** to the api function in REGION.
set -euo pipefail

# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

FIREBASE_TOOLS="firebase-tools@15.34.2"
dist="$repo/web/dist"
if [[ ! -f "$dist/index.html" ]]; then
  echo "hosting.sh: $dist is not built: run \`make web\` first." >&2
  exit 2
fi

site="$(terraform -chdir="$here" output -raw console_site_id)"
public="$repo/build/hosting/public"
rm -rf "$repo/build/hosting" && mkdir -p "$public"
cp -r "$dist/." "$public/"
terraform -chdir="$here" output -json console_firebase_config |
  python3 -c 'import json, sys; print(json.dumps({"firebase": json.load(sys.stdin), "apiUrl": "/api", "emulator": None}))' \
    >"$public/config.json"

cat >"$repo/build/hosting/firebase.json" <<JSON
{
  "hosting": {
    "site": "$site",
    "public": "public",
    "rewrites": [{ "source": "/api/**", "run": { "serviceId": "api", "region": "$region" } }],
    "headers": [
      {
        "source": "**",
        "headers": [
          { "key": "X-Content-Type-Options", "value": "nosniff" },
          { "key": "Referrer-Policy", "value": "same-origin" }
        ]
      },
      { "source": "/config.json", "headers": [{ "key": "Cache-Control", "value": "no-cache" }] }
    ]
  }
}
JSON

(cd "$repo/build/hosting" && npx --yes "$FIREBASE_TOOLS" deploy --only hosting --project "$project" --non-interactive)
echo "console: $(terraform -chdir="$here" output -raw console_url)"
