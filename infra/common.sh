# shellcheck shell=bash disable=SC2034  # what it sets is for the scripts that source it
# Sourced by deploy.sh and destroy.sh: where things are, and their PROJECT [REGION] arguments.
# Each script's header comment (lines 2 to the line before `set -euo pipefail`) is its usage.
# After sourcing: $here (infra/), $repo, $project, $region, $approve (-auto-approve when
# AUTO_APPROVE=1), and "$@" without PROJECT and REGION.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

usage() { sed -n '2,/^set -euo pipefail/{/^#/p}' "$0" | sed 's/^# \{0,1\}//' >&2; }

project="${1:-${PROJECT:-}}"
region="${2:-${REGION:-us-central1}}"
# No arguments to `source`, so these shifts are the sourcing script's own "$@".
(($# > 0)) && shift
(($# > 0)) && shift
if [[ -z "$project" ]]; then
  usage
  exit 2
fi

approve=()
if [[ "${AUTO_APPROVE:-0}" == 1 ]]; then
  approve=(-auto-approve)
fi
