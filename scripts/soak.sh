#!/usr/bin/env bash
# Soak test of one store against the faults a fleet of workers meets (issue 12): bounded in
# count and time, not part of CI. As root on Debian 12, from the repository:
#
#   bash scripts/soak.sh            # KILLS=100 CHAOS_SECONDS=120 WORKERS=4 (about 15 minutes)
#
# 1. kill -9 of `pull` at random moments, KILLS times: after each, the next pull succeeds,
#    `verify` is clean, and the layers are byte-identical (paths, modes, owners, sizes, link
#    targets, contents) to those of a clean pull into a fresh store;
# 2. chaos for CHAOS_SECONDS: WORKERS loops of `run --rm`, `exec` into a job container,
#    `run -d --rm`, `gc` and `rmi`+`pull`, each command sent SIGINT or SIGKILL at a random
#    moment one time in three; afterwards every container is removed and the script checks for
#    leaked mounts, cgroups, processes and run directories, and that `verify` is clean;
# 3. pulls into a filesystem that fills up mid-layer (ext4 loop files of FILL_SIZES MiB): each
#    fails naming the full disk, `verify` is clean, `gc` gives the space back, and a pull into a
#    roomy store afterwards is byte-identical again.
# Prints a summary table; exits 1 if any check failed. SKIFF=BINARY to use a prebuilt skiff.
set -uo pipefail
cd "$(dirname "$0")/.."
KILLS=${KILLS:-100}
CHAOS_SECONDS=${CHAOS_SECONDS:-120}
WORKERS=${WORKERS:-4}
FILL_SIZES=${FILL_SIZES:-"24 48 96"}
PORT=${SKIFF_REGISTRY_PORT:-5000}
REG=127.0.0.1:$PORT
W=${SOAK_DIR:-/var/tmp/skiff-soak}
DEBIAN_TAR=${SKIFF_TEST_DEBIAN_TAR:-/var/cache/skiff-test/debian-bookworm-minbase.tar}

[ "$(id -u)" -eq 0 ] || { echo "soak.sh: run as root" >&2; exit 1; }
bash scripts/setup.sh >/dev/null || exit 1
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if [ -z "${SKIFF:-}" ]; then
  cargo build --release -q -p skiff -p skiff-test-rig --bin skiff --bin skiff-rig || exit 1
  SKIFF=$PWD/target/release/skiff
else
  cargo build --release -q -p skiff-test-rig --bin skiff-rig || exit 1
fi
RIG=$PWD/target/release/skiff-rig
bash scripts/registry.sh >/dev/null || exit 1

cleanup() {
  for s in "$W"/store*; do
    [ -d "$s/containers" ] && "$SKIFF" --root "$s" rm -f $(ls "$s/containers" 2>/dev/null) >/dev/null 2>&1
  done
  findmnt -rno TARGET | grep "^$W" | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$W"
}
cleanup
trap cleanup EXIT
mkdir -p "$W"

# The images: Debian minbase plus a layer of 5,000 generated files (a pull takes long enough
# for a kill to land mid-layer), and the busybox fixture.
"$RIG" gen-layer --files 5000 --seed 7 --tar "$W/small.tar" "$W/small.gz" >/dev/null || exit 1
"$RIG" push-layers --registry "http://$REG" soak/debian:1 --layer "$DEBIAN_TAR" \
  --layer "$W/small.tar" >/dev/null || exit 1
"$RIG" push-busybox --registry "http://$REG" soak/busybox:1 >/dev/null || exit 1
BIG=$REG/soak/debian:1
BB=$REG/soak/busybox:1

declare -A RESULT
fail=0
note() { RESULT[$1]="$2"; }
sk() { "$SKIFF" --root "$S" "$@"; }

# A fingerprint of every layer of IMAGE in store $1: one line per entry, then a hash of all.
fingerprint() { # STORE IMAGE
  local ids
  ids=$("$SKIFF" --root "$1" inspect --format '{{range .Config.rootfs.diff_ids}}{{.}} {{end}}' "$2") || return 1
  for d in $ids; do
    python3 - "$1/layers/sha256/${d#sha256:}/fs" <<'PY'
import hashlib, os, sys
root = sys.argv[1]
h = hashlib.sha256()
for dirpath, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(dirs + files):
        p = os.path.join(dirpath, name)
        st = os.lstat(p)
        line = f"{os.path.relpath(p, root)} {st.st_mode:o} {st.st_uid} {st.st_gid} {st.st_size}"
        if os.path.islink(p):
            line += " -> " + os.readlink(p)
        elif os.path.isfile(p):
            with open(p, "rb") as f:
                line += " " + hashlib.sha256(f.read()).hexdigest()
        h.update(line.encode() + b"\n")
print(h.hexdigest())
PY
  done | sha256sum | cut -d' ' -f1
}

# --- 1. kill -9 of pull ---------------------------------------------------------------------
S=$W/store-ref
t0=$(date +%s%N)
sk pull -q "$BIG" >/dev/null || { echo "reference pull failed" >&2; exit 1; }
clean_secs=$(python3 -c "print(($(date +%s%N) - $t0) / 1e9)")
REF=$(fingerprint "$S" "$BIG")
echo "clean pull: ${clean_secs}s, fingerprint ${REF:0:16}"
S=$W/store
bad=0; killed_mid=0
t0=$(date +%s)
for i in $(seq 1 "$KILLS"); do
  sk rmi "$BIG" >/dev/null 2>&1; sk gc >/dev/null 2>&1
  # skiff itself in the background (not through a function: $! must be skiff's pid).
  "$SKIFF" --root "$S" pull -q "$BIG" >/dev/null 2>&1 &
  pid=$!
  sleep "$(python3 -c "import random; print(random.uniform(0, $clean_secs))")"
  if kill -9 "$pid" 2>/dev/null; then killed_mid=$((killed_mid + 1)); fi
  wait "$pid" 2>/dev/null
  if ! sk pull -q "$BIG" >/dev/null 2>"$W/pull.err"; then
    echo "kill $i: the next pull failed: $(cat "$W/pull.err")" >&2; bad=$((bad + 1)); continue
  fi
  if ! sk verify >"$W/verify.out" 2>&1; then
    echo "kill $i: verify: $(cat "$W/verify.out")" >&2; bad=$((bad + 1)); continue
  fi
  # The byte comparison costs a second or two: every tenth kill and the last.
  if [ $((i % 10)) -eq 0 ] || [ "$i" -eq "$KILLS" ]; then
    fp=$(fingerprint "$S" "$BIG")
    [ "$fp" = "$REF" ] || { echo "kill $i: layers differ from a clean pull" >&2; bad=$((bad + 1)); }
    echo "kill $i/$KILLS: $bad failed checks so far"
  fi
done
note kill "$KILLS kills ($killed_mid while pulling), $bad failed checks, $(( $(date +%s) - t0 )) s"
[ "$bad" -eq 0 ] || fail=1

# --- 2. chaos: run, exec, gc, rmi concurrently, with SIGINT and SIGKILL ----------------------
sk pull -q "$BB" >/dev/null || exit 1
sk run -d --name soak-job "$BB" sleep 100000 >/dev/null || exit 1
cgroups_before=$(find /sys/fs/cgroup -maxdepth 3 -path '*skiff*' -type d | sort)
deadline=$(( $(date +%s) + CHAOS_SECONDS ))
worker() { # N
  local n=0 ok=0 sig=0 cmd pid
  while [ "$(date +%s)" -lt "$deadline" ]; do
    case $((RANDOM % 6)) in
      0|1) cmd=(run --rm "$BB" sh -c "echo soak-$1; sleep 0.$((RANDOM % 5))") ;;
      2) cmd=(exec soak-job sh -c "echo step; sleep 0.$((RANDOM % 3))") ;;
      3) cmd=(run -d --rm "$BB" sh -c "sleep 0.$((RANDOM % 5))") ;;
      4) cmd=(gc) ;;
      5) cmd=(pull -q "$BIG") ;;
    esac
    if [ $((RANDOM % 12)) -eq 0 ]; then sk rmi "$BIG" >/dev/null 2>&1; fi
    "$SKIFF" --root "$S" "${cmd[@]}" >/dev/null 2>>"$W/chaos-$1.err" &
    pid=$!
    if [ $((RANDOM % 3)) -eq 0 ]; then
      sleep "0.0$((RANDOM % 10))"
      if [ $((RANDOM % 2)) -eq 0 ]; then kill -INT "$pid" 2>/dev/null; else kill -9 "$pid" 2>/dev/null; fi
      sig=$((sig + 1))
    fi
    wait "$pid" 2>/dev/null && ok=$((ok + 1))
    n=$((n + 1))
  done
  echo "$n $ok $sig" >"$W/worker-$1"
}
t0=$(date +%s)
for w in $(seq 1 "$WORKERS"); do worker "$w" & done
wait
total=0; succeeded=0; signalled=0
for w in $(seq 1 "$WORKERS"); do
  read -r n ok sig <"$W/worker-$w"
  total=$((total + n)); succeeded=$((succeeded + ok)); signalled=$((signalled + sig))
done
# Detached --rm containers may still be ending, and gc removes a killed run's empty cgroup
# once it is 10 s old (a run of another store may be about to join a newer one); then
# everything goes.
sleep 12
ids=$(ls "$S/containers" 2>/dev/null)
[ -n "$ids" ] && sk rm -f $ids >/dev/null 2>&1
sk gc >/dev/null 2>&1  # sweeps the run directories of killed runs
leaks=()
m=$(findmnt -rno TARGET | grep -c "^$S" || true)
[ "$m" -eq 0 ] || leaks+=("$m mounts")
cg=$(comm -13 <(echo "$cgroups_before") <(find /sys/fs/cgroup -maxdepth 3 -path '*skiff*' -type d | sort) | grep -c . || true)
[ "$cg" -eq 0 ] || leaks+=("$cg cgroups")
# Processes: none of the payloads, no monitor of this store.
p=$(pgrep -fc "soak-[0-9]|skiff monitor" || true)
[ "$p" -eq 0 ] || leaks+=("$p processes")
r=$(ls "$S/runs" 2>/dev/null | wc -l)
[ "$r" -eq 0 ] || leaks+=("$r run dirs")
c=$(ls "$S/containers" 2>/dev/null | wc -l)
[ "$c" -eq 0 ] || leaks+=("$c containers")
sk verify >"$W/verify.out" 2>&1 || leaks+=("verify: $(tr '\n' ' ' <"$W/verify.out")")
panics=$(cat "$W"/chaos-*.err 2>/dev/null | grep -c 'panicked' || true)
[ "$panics" -eq 0 ] || leaks+=("$panics panics")
note chaos "$total commands ($succeeded exit 0, $signalled signalled) by $WORKERS workers in $(( $(date +%s) - t0 )) s; leaks: ${leaks[*]:-none}"
[ ${#leaks[@]} -eq 0 ] || fail=1

# --- 3. a filesystem that fills up mid-layer -------------------------------------------------
bad=0; runs=0
for mib in $FILL_SIZES; do
  runs=$((runs + 1))
  img=$W/fill-$mib.ext4; mnt=$W/fill-$mib
  truncate -s "${mib}M" "$img" && mkfs.ext4 -q -F "$img" && mkdir -p "$mnt" && mount -o loop "$img" "$mnt"
  S=$mnt/store
  used0=$(df --output=used -k "$mnt" | tail -1)
  if sk pull -q "$BIG" >/dev/null 2>"$W/fill.err"; then
    echo "fill $mib MiB: the pull fit" >&2; bad=$((bad + 1))
  elif ! grep -q "No space left on device" "$W/fill.err"; then
    echo "fill $mib MiB: $(cat "$W/fill.err")" >&2; bad=$((bad + 1))
  fi
  sk verify >/dev/null 2>&1 || { echo "fill $mib MiB: verify not clean" >&2; bad=$((bad + 1)); }
  sk gc >/dev/null 2>&1
  used=$(df --output=used -k "$mnt" | tail -1)
  # What the store keeps beyond the empty filesystem: its folders and records.
  [ "$used" -le $((used0 + 1024)) ] ||
    { echo "fill $mib MiB: $((used - used0)) KiB still used after gc" >&2; bad=$((bad + 1)); }
  umount "$mnt"; rm -f "$img"
done
S=$W/store
sk rmi "$BIG" >/dev/null 2>&1; sk gc >/dev/null 2>&1
sk pull -q "$BIG" >/dev/null 2>&1 && [ "$(fingerprint "$S" "$BIG")" = "$REF" ] ||
  { echo "after the full disks: a pull is not byte-identical" >&2; bad=$((bad + 1)); }
note fill "$runs full-disk pulls ($FILL_SIZES MiB), $bad failed checks"
[ "$bad" -eq 0 ] || fail=1

echo
echo "| phase | result |"
echo "|---|---|"
echo "| kill -9 of pull | ${RESULT[kill]} |"
echo "| run/exec/gc/rmi chaos | ${RESULT[chaos]} |"
echo "| full filesystem | ${RESULT[fill]} |"
exit "$fail"
