#!/usr/bin/env bash
# The secrets docker-compose.yml mounts: the gateway's bearer tokens (inference,
# operations, metrics) and Grafana's admin password, one random value per file in
# secrets/ (or the folder given as the first argument).
# Idempotent: a file that exists and is not empty is kept, so re-running never rotates a
# token; delete a file to make a new one. The folder is private to you (0700); the files
# are 0644 because the containers read them as their own non-root users, through the
# mounts, which the folder's permissions do not guard.
set -euo pipefail

dir="${1:-$(cd "$(dirname "$0")/.." && pwd)/secrets}"
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

for name in inference.token operations.token metrics.token grafana_admin_password; do
    file="$dir/$name"
    if [ ! -s "$file" ]; then
        # 43 characters of [A-Za-z0-9]: about 256 bits, and nothing a shell or a header mangles.
        value="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 43 || true)"
        [ "${#value}" -eq 43 ] || { echo "make-secrets: could not read /dev/urandom" >&2; exit 1; }
        # No trailing newline: not every reader strips one (a password is taken verbatim).
        printf '%s' "$value" >"$file"
        echo "make-secrets: wrote $file"
    fi
    chmod 644 "$file"
done
