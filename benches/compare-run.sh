#!/usr/bin/env bash
# Warm start, side by side: `skiff run --rm IMAGE /bin/true` (image already in skiff's store)
# against `crun run` and `runc run` on a ready bundle of the same rootfs (the image's single
# layer copied out of skiff's store, config.json from `crun spec`, shared by crun and runc) and
# `podman run --rm --network none IMAGE /bin/true` (image pulled beforehand from the loopback
# registry). Every tool runs with a seccomp filter, the same one: podman's default profile in
# docker's format (/usr/share/containers/seccomp.json, Debian's golang-github-containers-common),
# which podman applies by default, skiff is given with `--security-opt seccomp=`, and this script
# resolves into the bundle's `linux.seccomp` as docker would (the rules' includes/excludes
# against the bundle's capabilities, docker's default set, and this machine's architecture and
# kernel). skiff is also timed with its own default (docker's profile), and crun and runc also
# without any filter, to show the filter's cost. skiff is timed with its default network (host)
# and with `--network none`, as the bundle's spec and podman get a fresh network namespace. All
# stores, bundles and state dirs live on one journaled ext4 loop file mounted at /mnt/skiff-bench
# (DESIGN.md, "Benchmark hygiene"). Once as root, once rootless as the unprivileged user
# skiff-test (runuser), each in ROUNDS hyperfine invocations (-N, --warmup 5, RUNS runs per
# tool) that run every tool, so the tools are interleaved round by round; prints medians (of all
# runs), ratios to skiff, then skiff's start-up phases (`--timings`). Run as root from the
# repository. RUNS=N, ROUNDS=N, SKIFF=BINARY (a prebuilt skiff), BENCH_USER=NAME (a user with
# /etc/subuid ranges), PROFILE=FILE (another profile in docker's format).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MNT=${SKIFF_BENCH_MNT:-/mnt/skiff-bench}
LOOP=${SKIFF_BENCH_IMG:-/var/tmp/skiff-bench.ext4}
PORT=${SKIFF_REGISTRY_PORT:-5000}
IMAGE=${IMAGE:-127.0.0.1:$PORT/demo/busybox:latest}
RUNS=${RUNS:-10}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-5}
U=${BENCH_USER:-skiff-test}
PROFILE=${PROFILE:-/usr/share/containers/seccomp.json}
UID_U=$(id -u "$U")
GID_U=$(id -g "$U")
W=$MNT/warm
XDG=/tmp/skiff-warm-run-$UID_U # the rootless user's XDG_RUNTIME_DIR (podman, crun)

# Tools (Debian packages); installed only when missing.
need=()
for pair in crun:crun runc:runc podman:podman hyperfine:hyperfine uidmap:newuidmap \
  docker-registry:docker-registry python3:python3; do
  command -v "${pair#*:}" >/dev/null || need+=("${pair%%:*}")
done
[ -f "$PROFILE" ] || need+=(golang-github-containers-common)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

cgroups_for_crun

# One journaled ext4 for every tool's store.
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

# podman: config files of its own under $W (no system file is changed), one set per user,
# pointed at by the CONTAINERS_* variables: the loopback registry is insecure, storage is
# overlay on the loop mount, ulimits fit this host (no CAP_SYS_RESOURCE, RLIMIT_NOFILE hard
# limit 20000), libpod's tmp dir and event log are private to this benchmark.
podman_conf() { # DIR RUNROOT
  mkdir -p "$1/conf"
  cat >"$1/conf/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "${IMAGE%%/*}"
insecure = true
EOF
  cat >"$1/conf/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$1/podman/graph"
runroot = "$2"
EOF
  cat >"$1/conf/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$1/podman/events.log"
tmp_dir = "$2/libpod-tmp"
EOF
}
# As $U, with the rootless user's environment (podman config, XDG_RUNTIME_DIR).
as_user() {
  runuser -u "$U" -- env XDG_RUNTIME_DIR="$XDG" \
    CONTAINERS_REGISTRIES_CONF="$W/rootless/conf/registries.conf" \
    CONTAINERS_STORAGE_CONF="$W/rootless/conf/storage.conf" \
    CONTAINERS_CONF="$W/rootless/conf/containers.conf" "$@"
}
root_env() {
  env CONTAINERS_REGISTRIES_CONF="$W/root/conf/registries.conf" \
    CONTAINERS_STORAGE_CONF="$W/root/conf/storage.conf" \
    CONTAINERS_CONF="$W/root/conf/containers.conf" "$@"
}

cleanup() {
  set +e
  if [ -d "$W/root/conf" ]; then
    root_env podman rm -a -f >/dev/null 2>&1
    root_env podman rmi -a -f >/dev/null 2>&1
  fi
  if [ -d "$W/rootless/conf" ]; then
    as_user podman rm -a -f >/dev/null 2>&1
    as_user podman system reset -f >/dev/null 2>&1
    # rootless podman's pause process (holds its user namespace), started by this script
    [ -f "$XDG/libpod/tmp/pause.pid" ] && kill "$(cat "$XDG/libpod/tmp/pause.pid")" 2>/dev/null
  fi
  for s in "$W/root/crun" "$W/rootless/crun"; do
    [ -d "$s" ] && for id in $(ls "$s"); do crun --root "$s" delete -f "$id"; done
  done
  for s in "$W/root/runc" "$W/rootless/runc"; do
    [ -d "$s" ] && for id in $(ls "$s"); do runc --root "$s" delete -f "$id"; done
  done
  # root podman (cgroupfs manager) leaves its conmon cgroups behind
  if [ -z "$had_libpod_parent" ]; then
    for d in /sys/fs/cgroup/*/libpod_parent; do rmdir "$d/conmon" "$d"; done
  fi
  # root podman's overlay driver keeps a private bind mount of its graph dir
  findmnt -rno TARGET | grep "^$W/" | sort -r | xargs -r -n1 umount
  rm -rf "$W" "$XDG"
  set -e
}
had_libpod_parent=$(ls -d /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true)
cleanup >/dev/null 2>&1
trap 'cleanup >/dev/null 2>&1' EXIT

mkdir -p "$W/root" "$W/rootless" "$XDG"
chown "$U:" "$W/rootless" "$XDG"
chmod 700 "$XDG"
podman_conf "$W/root" "$W/root/podman/run"
podman_conf "$W/rootless" "$XDG/containers"
chown -R "$U:" "$W/rootless/conf"

# Stores: skiff and podman pull the image; the bundle's rootfs is skiff's copy of its layer.
"$SKIFF" --root "$W/root/skiff" pull -q "$IMAGE" >/dev/null
as_user "$SKIFF" --root "$W/rootless/skiff" pull -q "$IMAGE" >/dev/null
root_env podman pull -q "$IMAGE" >/dev/null
as_user podman pull -q "$IMAGE" >/dev/null
diff_ids=$("$SKIFF" --root "$W/root/skiff" inspect "$IMAGE" |
  python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)[0]["Config"]["rootfs"]["diff_ids"]))')
[ "$(wc -w <<<"$diff_ids")" = 1 ] || { echo "expected a one-layer image: $diff_ids" >&2; exit 1; }
LAYER=$W/root/skiff/layers/sha256/${diff_ids#sha256:}/fs
[ -x "$LAYER/bin/true" ] || { echo "no /bin/true in $LAYER" >&2; exit 1; }

# Bundles: config.json from `crun spec` (root) / `crun spec --rootless`, with the command
# /bin/true, no terminal, docker's default capabilities and no no_new_privileges (what skiff
# and docker give a container), the seccomp profile resolved into `linux.seccomp`, an explicit
# uid/gid map (runc needs one) when rootless. DIR-noseccomp: the same spec without the filter,
# on the same rootfs.
make_bundle() { # DIR [--rootless UID GID]
  mkdir -p "$1/rootfs" "$1-noseccomp"
  cp -a "$LAYER/." "$1/rootfs/"
  (cd "$1" && crun spec ${2:-})
  python3 - "$1" "$PROFILE" "${3:-}" "${4:-}" <<'PY'
import json, os, platform, sys
bundle, profile_path, uid, gid = sys.argv[1:5]
path = f"{bundle}/config.json"
spec = json.load(open(path))
spec["process"]["args"] = ["/bin/true"]
spec["process"]["terminal"] = False
spec["process"].pop("noNewPrivileges", None)
caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
spec["process"]["capabilities"] = {
    "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []}
if uid:
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": int(uid), "size": 1}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": int(gid), "size": 1}]
plain = json.loads(json.dumps(spec))
plain["root"]["path"] = f"{bundle}/rootfs"
json.dump(plain, open(f"{bundle}-noseccomp/config.json", "w"), indent=2)

# The profile in docker's format resolved as moby's setupSeccomp resolves it.
goarch = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm",
          "s390x": "s390x", "ppc64le": "ppc64le", "riscv64": "riscv64"}[platform.machine()]
native = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "386": "SCMP_ARCH_X86",
          "arm": "SCMP_ARCH_ARM", "s390x": "SCMP_ARCH_S390X", "ppc64le": "SCMP_ARCH_PPC64LE",
          "riscv64": "SCMP_ARCH_RISCV64"}[goarch]
def version(v):
    return tuple(int("".join(c for c in x if c.isdigit()) or 0) for x in v.split(".")[:3])
kernel = version(os.uname().release.split("-")[0])
profile = json.load(open(profile_path))
arches = list(profile.get("architectures") or [])
for m in profile.get("archMap") or []:
    if m["architecture"] == native:
        arches += [m["architecture"]] + list(m.get("subArchitectures") or [])
rules = []
for rule in profile.get("syscalls") or []:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if goarch in (exc.get("arches") or []) or any(c in caps for c in exc.get("caps") or []):
        continue
    if exc.get("minKernel") and kernel >= version(exc["minKernel"]):
        continue
    if inc.get("arches") and goarch not in inc["arches"]:
        continue
    if any(c not in caps for c in inc.get("caps") or []):
        continue
    if inc.get("minKernel") and kernel < version(inc["minKernel"]):
        continue
    names = list(rule.get("names") or []) + ([rule["name"]] if rule.get("name") else [])
    out = {"names": names, "action": rule["action"]}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = rule["errnoRet"]
    if rule.get("args"):
        out["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op")}
                       for a in rule["args"]]
    rules.append(out)
seccomp = {"defaultAction": profile["defaultAction"], "architectures": arches,
           "syscalls": rules}
if profile.get("defaultErrnoRet") is not None:
    seccomp["defaultErrnoRet"] = profile["defaultErrnoRet"]
spec["linux"]["seccomp"] = seccomp
json.dump(spec, open(path, "w"), indent=2)
PY
}
make_bundle "$W/root/bundle"
make_bundle "$W/rootless/bundle" --rootless "$UID_U" "$GID_U"
chown -R "$U:" "$W/rootless/bundle" "$W/rootless/bundle-noseccomp"
mkdir -p "$W/root/crun" "$W/root/runc" "$W/rootless/crun" "$W/rootless/runc"
chown "$U:" "$W/rootless/crun" "$W/rootless/runc"

# name|command pairs, identical as root and rootless except for the directories.
# name|command pairs, identical as root and rootless except for the directories.
commands() { # DIR
  local run="run --rm --security-opt seccomp=$PROFILE"
  echo "skiff|$SKIFF --root $1/skiff $run $IMAGE /bin/true"
  echo "skiff --network none|$SKIFF --root $1/skiff $run --network none $IMAGE /bin/true"
  echo "skiff, its default profile|$SKIFF --root $1/skiff run --rm $IMAGE /bin/true"
  echo "crun (ready bundle)|crun --root $1/crun run -b $1/bundle skiff-warm-crun"
  echo "runc (ready bundle)|runc --root $1/runc run -b $1/bundle skiff-warm-runc"
  echo "podman --network none|podman run --rm --network none $IMAGE /bin/true"
  echo "crun, no seccomp|crun --root $1/crun run -b $1/bundle-noseccomp skiff-warm-crun"
  echo "runc, no seccomp|runc --root $1/runc run -b $1/bundle-noseccomp skiff-warm-runc"
}
bench() { # root|rootless
  local dir=$W/$1 args=() name cmd
  while IFS='|' read -r name cmd; do
    # every command must work before it is timed
    if [ "$1" = root ]; then root_env $cmd; else as_user $cmd; fi </dev/null ||
      { echo "$1: '$cmd' failed" >&2; exit 1; }
    args+=(-n "$name" "$cmd")
  done < <(commands "$dir")
  echo "$1: load before $(cut -d' ' -f1-3 /proc/loadavg)"
  for round in $(seq 1 "$ROUNDS"); do
    local hf=(hyperfine -N --style none --warmup "$WARMUP" --runs "$RUNS"
      --export-json "$dir/warm-$round.json" "${args[@]}")
    if [ "$1" = root ]; then root_env "${hf[@]}"; else as_user "${hf[@]}"; fi \
      >/dev/null 2>>"$W/hyperfine.log" || { cat "$W/hyperfine.log" >&2; exit 1; }
    echo "$1: round $round/$ROUNDS done, load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
}
report() { # root|rootless
  python3 - "$W/$1" "$ROUNDS" "$1" <<'PY'
import json, statistics, sys
d, rounds, who = sys.argv[1], int(sys.argv[2]), sys.argv[3]
times = {}
for r in range(1, rounds + 1):
    for res in json.load(open(f"{d}/warm-{r}.json"))["results"]:
        times.setdefault(res["command"], []).extend(res["times"])
med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
n = len(next(iter(times.values())))
print(f"\n{who}: {n} runs per tool ({rounds} interleaved rounds)\n")
print("| command | median ms | min ms | max ms | vs skiff | vs skiff --network none |")
print("|---|---:|---:|---:|---:|---:|")
s, sn = med["skiff"], med["skiff --network none"]
for k, v in times.items():
    print(f"| {k} | {med[k]:.1f} | {min(v) * 1e3:.1f} | {max(v) * 1e3:.1f} "
          f"| {med[k] / s:.2f}x | {med[k] / sn:.2f}x |")
print("\n(vs skiff = the tool's median / skiff's median: above 1 means skiff is faster)")
PY
}
phases() { # root|rootless
  echo
  echo "$1: skiff run --rm --timings --security-opt seccomp=$PROFILE $IMAGE /bin/true (5 runs)"
  for _ in 1 2 3 4 5; do
    if [ "$1" = root ]; then
      "$SKIFF" --root "$W/root/skiff" run --rm --timings --security-opt "seccomp=$PROFILE" \
        "$IMAGE" /bin/true 2>&1
    else
      as_user "$SKIFF" --root "$W/rootless/skiff" run --rm --timings \
        --security-opt "seccomp=$PROFILE" "$IMAGE" /bin/true 2>&1
    fi | tr -s ' ' | sed 's/^ //' | paste -sd' '
  done
}

bench root
bench rootless
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
report root | tee "$MNT/warm-start.md"
report rootless | tee -a "$MNT/warm-start.md"
phases root | tee -a "$MNT/warm-start.md"
phases rootless | tee -a "$MNT/warm-start.md"
