#!/usr/bin/env bash
# Starts the demo registry (Debian's docker-registry) on 127.0.0.1:${PORT:-5000} in the
# background, unless one already answers there. Storage: /var/lib/skiff-registry.
set -euo pipefail
PORT=${SKIFF_REGISTRY_PORT:-5000}
DIR=${SKIFF_REGISTRY_DIR:-/var/lib/skiff-registry}

if curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1; then
  echo "registry.sh: a registry already answers on 127.0.0.1:$PORT"
  exit 0
fi
mkdir -p "$DIR/storage"
cat >"$DIR/config.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
YML
setsid docker-registry serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 </dev/null &
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && { echo "registry.sh: listening on 127.0.0.1:$PORT (log: $DIR/registry.log)"; exit 0; }
  sleep 0.1
done
echo "registry.sh: docker-registry did not start; its log:" >&2
cat "$DIR/registry.log" >&2
exit 1
