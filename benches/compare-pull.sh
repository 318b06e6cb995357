#!/usr/bin/env bash
# Cold pull, side by side: `skiff pull`, `podman pull`, and `skopeo copy` + `umoci unpack` of the
# 7-layer Debian tool image (benches/build-tool-image.sh) from a loopback registry, each from an
# empty store, plus GNU `tar -xzf` of the same gzip blobs one by one as a reference. All stores
# live on one journaled ext4 loop file mounted at /mnt/skiff-bench (see DESIGN.md, "Benchmark
# hygiene"); page caches are not dropped. Rounds are interleaved (every tool once per round, a
# first untimed round warms the caches); prints medians, min, max, the ratios to skiff, and
# peak RSS (/usr/bin/time). Run as root from the repository; ROUNDS=N sets the timed rounds,
# SKIFF=BINARY uses a prebuilt skiff.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MNT=${SKIFF_BENCH_MNT:-/mnt/skiff-bench}
LOOP=${SKIFF_BENCH_IMG:-/var/tmp/skiff-bench.ext4}
CACHE=${CACHE:-/var/cache/skiff-bench/tools}
IMAGE=${IMAGE:-127.0.0.1:5000/bench/tools:1}
ROUNDS=${ROUNDS:-7}
export CACHE IMAGE

# Tools (Debian packages); installed only when missing.
need=()
for pair in podman:podman skopeo:skopeo umoci:umoci hyperfine:hyperfine debootstrap:debootstrap \
  docker-registry:docker-registry time:/usr/bin/time; do
  command -v "${pair#*:}" >/dev/null || need+=("${pair%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# One journaled ext4 for every tool's store.
mount_bench_fs "$MNT" "$LOOP"

# podman and skopeo: config files of their own (no system file is changed), pointed at by the
# CONTAINERS_* variables: the loopback registry is insecure (plain HTTP), podman's storage
# (overlay) has graphroot and runroot on the loop mount, and the ulimits fit this host
# (no CAP_SYS_RESOURCE, RLIMIT_NOFILE hard limit 20000).
CONF=$MNT/containers-conf
mkdir -p "$CONF"
cat >"$CONF/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "${IMAGE%%/*}"
insecure = true
EOF
cat >"$CONF/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$MNT/podman/graph"
runroot = "$MNT/podman/run"
EOF
cat >"$CONF/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF
export CONTAINERS_REGISTRIES_CONF=$CONF/registries.conf
export CONTAINERS_STORAGE_CONF=$CONF/storage.conf
export CONTAINERS_CONF=$CONF/containers.conf

# SKIFF=/path/to/skiff benchmarks a binary built elsewhere (e.g. from a clean checkout).
if [ -z "${SKIFF:-}" ]; then
  cargo build --release -q --bin skiff -p skiff
  SKIFF=$PWD/target/release/skiff
fi
cargo build --release -q --bin skiff-rig -p skiff-test-rig
RIG=$PWD/target/release/skiff-rig
export RIG
bash scripts/registry.sh
bash benches/build-tool-image.sh >/dev/null
BLOBS=()
for n in $(seq 1 7); do BLOBS+=("$CACHE/layer$n.tar.gz"); done

cd "$MNT"
rm -rf skiff oci bundle tar podman
# Each tool's empty store; nothing else is dropped.
prep_skiff='rm -rf skiff; sync'
prep_podman='podman rmi -a -f >/dev/null 2>&1 || true; sync'
prep_umoci='rm -rf oci bundle; sync'
prep_tar='rm -rf tar; sync'
cmd_skiff="$SKIFF --root $MNT/skiff pull -q $IMAGE"
cmd_podman="podman pull -q $IMAGE"
cmd_umoci="skopeo copy -q --src-tls-verify=false docker://$IMAGE oci:$MNT/oci:tools && umoci unpack --image $MNT/oci:tools $MNT/bundle"
cmd_tar="i=0; for b in ${BLOBS[*]}; do i=\$((i+1)); mkdir -p tar/\$i; tar -xzf \$b -C tar/\$i; done"

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 0 "$ROUNDS"); do
  # Round 0 warms the page cache (registry blobs, binaries) and podman's storage; not counted.
  hyperfine --runs 1 --style basic --export-json "pull-$round.json" \
    --prepare "$prep_skiff" -n 'skiff pull' "$cmd_skiff" \
    --prepare "$prep_podman" -n 'podman pull' "$cmd_podman" \
    --prepare "$prep_umoci" -n 'skopeo copy + umoci unpack' "$cmd_umoci" \
    --prepare "$prep_tar" -n 'tar -xzf, 7 blobs one by one' "$cmd_tar" >/dev/null
  echo "round $round done, load $(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$ROUNDS" <<'PY' | tee pull.md
import json, statistics, sys
rounds = int(sys.argv[1])
times = {}
for r in range(1, rounds + 1):
    for res in json.load(open(f"pull-{r}.json"))["results"]:
        times.setdefault(res["command"], []).extend(res["times"])
med = {k: statistics.median(v) for k, v in times.items()}
print(f"| command ({rounds} interleaved runs) | median s | min s | max s |")
print("|---|---:|---:|---:|")
for k, v in times.items():
    print(f"| {k} | {med[k]:.2f} | {min(v):.2f} | {max(v):.2f} |")
s = med["skiff pull"]
print()
print(f"podman / skiff: {med['podman pull'] / s:.2f}x; "
      f"skopeo+umoci / skiff: {med['skopeo copy + umoci unpack'] / s:.2f}x; "
      f"tar one by one / skiff: {med['tar -xzf, 7 blobs one by one'] / s:.2f}x")
PY

eval "$prep_skiff"
/usr/bin/time -f 'peak RSS skiff pull: %M KiB' $cmd_skiff >/dev/null
"$SKIFF" --root "$MNT/skiff" verify >/dev/null 2>&1 && echo "skiff verify: ok" || echo "skiff verify: FAILED"
eval "$prep_podman"
/usr/bin/time -f 'peak RSS podman pull: %M KiB' $cmd_podman >/dev/null
eval "$prep_skiff"; eval "$prep_podman"; eval "$prep_umoci"; eval "$prep_tar"
