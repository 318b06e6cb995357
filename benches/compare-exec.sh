#!/usr/bin/env bash
# Job containers, side by side, as root: `exec C /bin/true` into a running container, a
# container's `create` + `start` (payload `sleep`), and `rm -f` of a running one, for skiff,
# crun and runc (a ready bundle of the same rootfs, from `crun spec`), podman and docker
# (docker.io, installed and its dockerd started by this script only, on its own data root and
# socket, with no iptables and no bridge). Every tool's store, bundle and state dir is on one
# journaled ext4 loop file at /mnt/skiff-bench (DESIGN.md, "Benchmark hygiene"). exec is timed
# with hyperfine (-N), ROUNDS invocations that each run every tool RUNS times, so the tools are
# interleaved; create+start and rm -f are timed by a Python loop that runs the tools in turn,
# CYCLES times. Prints medians and ratios to skiff. Run as root from the repository.
# RUNS=N ROUNDS=N CYCLES=N SKIFF=BINARY (a prebuilt skiff).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MNT=${SKIFF_BENCH_MNT:-/mnt/skiff-bench}
LOOP=${SKIFF_BENCH_IMG:-/var/tmp/skiff-bench.ext4}
PORT=${SKIFF_REGISTRY_PORT:-5000}
IMAGE=${IMAGE:-127.0.0.1:$PORT/demo/busybox:latest}
RUNS=${RUNS:-20}
ROUNDS=${ROUNDS:-5}
CYCLES=${CYCLES:-20}
W=$MNT/exec
SOCK=$W/docker/docker.sock

need=()
for pair in crun:crun runc:runc podman:podman hyperfine:hyperfine docker.io:dockerd \
  docker-registry:docker-registry python3:python3; do
  command -v "${pair#*:}" >/dev/null || need+=("${pair%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# Debian's docker.io starts its daemon where systemd runs: this script uses its own.
DOCKER_CLI=/usr/bin/docker
[ -x "$DOCKER_CLI" ] || DOCKER_CLI=$(command -v docker)

cgroups_for_crun
mount_bench_fs "$MNT" "$LOOP"

if [ -z "${SKIFF:-}" ]; then
  cargo build --release -q -p skiff -p skiff-test-rig --bin skiff --bin skiff-rig
  SKIFF=$PWD/target/release/skiff
else
  cargo build --release -q -p skiff-test-rig --bin skiff-rig
fi
RIG=$PWD/target/release/skiff-rig
bash scripts/registry.sh
"$RIG" push-busybox --registry "http://127.0.0.1:$PORT" "${IMAGE#*/}" >/dev/null

podman_env() {
  env CONTAINERS_REGISTRIES_CONF="$W/podman/registries.conf" \
    CONTAINERS_STORAGE_CONF="$W/podman/storage.conf" \
    CONTAINERS_CONF="$W/podman/containers.conf" "$@"
}
dk() { "$DOCKER_CLI" -H "unix://$SOCK" "$@"; }

cleanup() {
  set +e
  [ -d "$W/skiff" ] && "$SKIFF" --root "$W/skiff" rm -f bench-exec bench-cycle
  [ -d "$W/podman" ] && podman_env podman rm -a -f && podman_env podman rmi -a -f
  if [ -S "$SOCK" ]; then
    dk rm -f bench-exec bench-cycle
    kill "$(cat "$W/docker/dockerd.pid")"
    while [ -e "$W/docker/dockerd.pid" ]; do sleep 0.2; done
  fi
  for t in crun runc; do
    [ -d "$W/$t" ] && for id in $(ls "$W/$t"); do $t --root "$W/$t" delete -f "$id"; done
  done
  if [ -z "$had_libpod_parent" ]; then
    for d in /sys/fs/cgroup/*/libpod_parent; do rmdir "$d/conmon" "$d"; done
  fi
  findmnt -rno TARGET | grep "^$W/" | sort -r | xargs -r -n1 umount
  rm -rf "$W"
  set -e
}
had_libpod_parent=$(ls -d /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true)
cleanup >/dev/null 2>&1
trap 'cleanup >/dev/null 2>&1' EXIT
mkdir -p "$W/podman" "$W/docker" "$W/crun" "$W/runc"

cat >"$W/podman/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "${IMAGE%%/*}"
insecure = true
EOF
cat >"$W/podman/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$W/podman/graph"
runroot = "$W/podman/run"
EOF
cat >"$W/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$W/podman/events.log"
tmp_dir = "$W/podman/run/libpod-tmp"
EOF

dockerd --data-root "$W/docker/data" --exec-root "$W/docker/exec" -H "unix://$SOCK" \
  --pidfile "$W/docker/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
  --storage-driver overlay2 >"$W/docker/dockerd.log" 2>&1 &
for _ in $(seq 1 100); do dk version >/dev/null 2>&1 && break; sleep 0.2; done
dk version >/dev/null || { tail -20 "$W/docker/dockerd.log" >&2; exit 1; }

# Images and one running container per tool, each with `sleep` as its payload.
"$SKIFF" --root "$W/skiff" pull -q "$IMAGE" >/dev/null
podman_env podman pull -q "$IMAGE" >/dev/null
dk pull -q "$IMAGE" >/dev/null
LAYER=$("$SKIFF" --root "$W/skiff" inspect --format '{{index .Config.rootfs.diff_ids 0}}' "$IMAGE")
LAYER=$W/skiff/layers/sha256/${LAYER#sha256:}/fs
for t in crun runc; do
  mkdir -p "$W/bundle-$t/rootfs"
  cp -a "$LAYER/." "$W/bundle-$t/rootfs/"
  (cd "$W/bundle-$t" && crun spec)
  python3 - "$W/bundle-$t/config.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["process"]["args"] = ["sleep", "100000"]
spec["process"]["terminal"] = False
json.dump(spec, open(sys.argv[1], "w"))
PY
done
"$SKIFF" --root "$W/skiff" run -d --name bench-exec "$IMAGE" sleep 100000 >/dev/null
crun --root "$W/crun" run -d -b "$W/bundle-crun" bench-exec </dev/null >/dev/null 2>&1
runc --root "$W/runc" run -d -b "$W/bundle-runc" bench-exec </dev/null >/dev/null 2>&1
podman_env podman run -d --name bench-exec --network none "$IMAGE" sleep 100000 >/dev/null
dk run -d --name bench-exec --network none "$IMAGE" sleep 100000 >/dev/null

execs=(
  -n "skiff exec" "$SKIFF --root $W/skiff exec bench-exec /bin/true"
  -n "crun exec" "crun --root $W/crun exec bench-exec /bin/true"
  -n "runc exec" "runc --root $W/runc exec bench-exec /bin/true"
  -n "podman exec" "env CONTAINERS_REGISTRIES_CONF=$W/podman/registries.conf CONTAINERS_STORAGE_CONF=$W/podman/storage.conf CONTAINERS_CONF=$W/podman/containers.conf podman exec bench-exec /bin/true"
  -n "docker exec" "$DOCKER_CLI -H unix://$SOCK exec bench-exec /bin/true"
)
for ((i = 1; i < ${#execs[@]}; i += 3)); do
  ${execs[i + 1]} >/dev/null || { echo "'${execs[i + 1]}' failed" >&2; exit 1; }
done
echo "exec: load before $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$W/exec-$round.json" \
    "${execs[@]}" >/dev/null 2>>"$W/hyperfine.log" || { cat "$W/hyperfine.log" >&2; exit 1; }
  echo "exec: round $round/$ROUNDS done, load $(cut -d' ' -f1-3 /proc/loadavg)"
done

# create + start, then rm -f, each tool in turn, CYCLES times.
python3 - "$W" "$SKIFF" "$DOCKER_CLI" "$SOCK" "$IMAGE" "$CYCLES" <<'PY' | tee "$W/cycle.txt"
import os, statistics, subprocess, sys, time
w, skiff, docker, sock, image, cycles = sys.argv[1:7]
penv = dict(os.environ, CONTAINERS_REGISTRIES_CONF=f"{w}/podman/registries.conf",
            CONTAINERS_STORAGE_CONF=f"{w}/podman/storage.conf",
            CONTAINERS_CONF=f"{w}/podman/containers.conf")
sk = [skiff, "--root", f"{w}/skiff"]
dk = [docker, "-H", f"unix://{sock}"]
tools = {
    "skiff": ([sk + ["create", "--name", "bench-cycle", image, "sleep", "100000"],
               sk + ["start", "bench-cycle"]], [sk + ["rm", "-f", "bench-cycle"]], None),
    "crun": ([["crun", "--root", f"{w}/crun", "create", "-b", f"{w}/bundle-crun", "bench-cycle"],
              ["crun", "--root", f"{w}/crun", "start", "bench-cycle"]],
             [["crun", "--root", f"{w}/crun", "delete", "-f", "bench-cycle"]], None),
    "runc": ([["runc", "--root", f"{w}/runc", "create", "-b", f"{w}/bundle-runc", "bench-cycle"],
              ["runc", "--root", f"{w}/runc", "start", "bench-cycle"]],
             [["runc", "--root", f"{w}/runc", "delete", "-f", "bench-cycle"]], None),
    "podman": ([["podman", "create", "--name", "bench-cycle", "--network", "none", image,
                 "sleep", "100000"], ["podman", "start", "bench-cycle"]],
               [["podman", "rm", "-f", "-t", "0", "bench-cycle"]], penv),
    "docker": ([dk + ["create", "--name", "bench-cycle", "--network", "none", image, "sleep",
                      "100000"], dk + ["start", "bench-cycle"]],
               [dk + ["rm", "-f", "bench-cycle"]], None),
}
def timed(cmds, env):
    t = time.perf_counter()
    for c in cmds:
        subprocess.run(c, check=True, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1e3
up, down = {k: [] for k in tools}, {k: [] for k in tools}
for i in range(int(cycles) + 2):
    for name, (start, rm, env) in tools.items():
        a, b = timed(start, env), timed(rm, env)
        if i >= 2:  # two warm-up cycles
            up[name].append(a)
            down[name].append(b)
print(f"\ncreate+start and rm -f: {cycles} cycles per tool, tools in turn\n")
print("| tool | create+start median ms | vs skiff | rm -f median ms | vs skiff |")
print("|---|---:|---:|---:|---:|")
su, sd = statistics.median(up["skiff"]), statistics.median(down["skiff"])
for k in tools:
    u, d = statistics.median(up[k]), statistics.median(down[k])
    print(f"| {k} | {u:.1f} | {u / su:.2f}x | {d:.1f} | {d / sd:.2f}x |")
PY

python3 - "$W" "$ROUNDS" <<'PY' | tee "$W/exec.txt"
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
times = {}
for r in range(1, rounds + 1):
    for res in json.load(open(f"{d}/exec-{r}.json"))["results"]:
        times.setdefault(res["command"], []).extend(res["times"])
med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
n = len(next(iter(times.values())))
print(f"\nexec C /bin/true into a running container: {n} runs per tool ({rounds} interleaved rounds)\n")
print("| command | median ms | min ms | max ms | vs skiff |")
print("|---|---:|---:|---:|---:|")
for k, v in times.items():
    print(f"| {k} | {med[k]:.1f} | {min(v) * 1e3:.1f} | {max(v) * 1e3:.1f} | {med[k] / med['skiff exec']:.2f}x |")
print("\n(vs skiff = the tool's median / skiff's: above 1 means skiff is faster)")
PY
cat "$W/exec.txt" "$W/cycle.txt" >"$MNT/exec.md"
