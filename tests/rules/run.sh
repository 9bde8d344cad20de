#!/usr/bin/env bash
# Checks firestore.rules on the Firestore emulator: installs the npm deps if missing, starts
# the emulator on a free port in its own process group, runs rules.test.mjs, and stops the
# whole group on exit (also on failure or Ctrl-C). Exits with the test's exit code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if [[ ! -d node_modules ]]; then
  npm ci --ignore-scripts --no-audit --no-fund
fi

command -v gcloud >/dev/null || { echo "run.sh: gcloud is needed for the Firestore emulator" >&2; exit 2; }

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
log="$(mktemp -t firestore-emulator.XXXXXX.log)"

# setsid: the emulator (gcloud and the java process it starts) gets a process group of its own,
# whose id is its pid, so one kill stops all of it and nothing else.
setsid gcloud beta emulators firestore start --host-port="127.0.0.1:${port}" --quiet >"$log" 2>&1 &
emulator_pgid=$!

# shellcheck disable=SC2317  # run by the EXIT trap
stop_emulator() {
  local rc=$?
  if kill -0 -- "-${emulator_pgid}" 2>/dev/null; then
    kill -TERM -- "-${emulator_pgid}" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 -- "-${emulator_pgid}" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL -- "-${emulator_pgid}" 2>/dev/null || true
  fi
  rm -f "$log"
  exit "$rc"
}
trap stop_emulator EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ready=""
for _ in $(seq 1 120); do
  if ! kill -0 "$emulator_pgid" 2>/dev/null; then
    echo "run.sh: the Firestore emulator exited before it was ready:" >&2
    cat "$log" >&2
    exit 1
  fi
  if curl -fsS "http://127.0.0.1:${port}/" >/dev/null 2>&1; then
    ready=yes
    break
  fi
  sleep 0.5
done
if [[ -z "$ready" ]]; then
  echo "run.sh: the Firestore emulator did not answer on 127.0.0.1:${port} within 60 s:" >&2
  cat "$log" >&2
  exit 1
fi

export FIRESTORE_EMULATOR_HOST="127.0.0.1:${port}"
set +e
node --test --test-reporter=spec rules.test.mjs
status=$?
set -e
exit "$status"
