# Shared by the comparison scripts (sourced, as root): the benchmark filesystem and crun's
# cgroup needs.

# mount_bench_fs MNT LOOP: one journaled ext4 loop file (8 GiB, made once) mounted at MNT for
# every tool's store (DESIGN.md, "Benchmark hygiene": the root ext4 here has no journal).
mount_bench_fs() {
  local mnt=$1 loop=$2
  if ! mountpoint -q "$mnt"; then
    mkdir -p "$mnt"
    [ -f "$loop" ] || { truncate -s 8G "$loop"; mkfs.ext4 -q -F "$loop"; }
    mount -o loop "$loop" "$mnt"
  fi
  grep -q "^[^ ]* $mnt ext4 " /proc/mounts || { echo "$mnt is not ext4" >&2; exit 1; }
  dumpe2fs -h "$(findmnt -no SOURCE "$mnt")" 2>/dev/null | grep -q has_journal ||
    { echo "$mnt has no journal" >&2; exit 1; }
}

# cgroups_for_crun: crun 1.8 refuses a hybrid cgroup layout while a controller (here hugetlb)
# is bound to the cgroup2 hierarchy: give such controllers their own v1 hierarchy (DESIGN.md,
# "Peer tools"). A controller enabled in a cgroup2 subtree (libcontainer's v2 manager enables
# every one in skiff's) cannot move: it is disabled there first, deepest first.
cgroups_for_crun() {
  local v2 c
  v2=$(findmnt -rno TARGET -t cgroup2 | head -n1 || true)
  [ -n "$v2" ] && [ "$v2" != /sys/fs/cgroup ] || return 0
  for c in $(cat "$v2/cgroup.controllers"); do
    mountpoint -q "/sys/fs/cgroup/$c" && continue
    find "$v2" -name cgroup.subtree_control | sort -r | while read -r f; do
      grep -qw "$c" "$f" && echo "-$c" >"$f" 2>/dev/null || true
    done
    mkdir -p "/sys/fs/cgroup/$c"
    mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
    echo "mounted the $c controller as its own cgroup v1 hierarchy (crun needs it)"
  done
}

# podman_env DIR REGISTRY...: podman's own config files under DIR (no system file changes),
# exported through the CONTAINERS_* variables: the given registries plain HTTP, overlay storage
# under DIR, ulimits that fit this host (no CAP_SYS_RESOURCE, RLIMIT_NOFILE hard limit 20000).
podman_env() {
  local dir=$1 reg
  shift
  mkdir -p "$dir"
  echo 'unqualified-search-registries = []' >"$dir/registries.conf"
  for reg in "$@"; do
    printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$reg" >>"$dir/registries.conf"
  done
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
    "$dir/graph" "$dir/run" >"$dir/storage.conf"
  printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n' \
    >"$dir/containers.conf"
  export CONTAINERS_REGISTRIES_CONF=$dir/registries.conf
  export CONTAINERS_STORAGE_CONF=$dir/storage.conf
  export CONTAINERS_CONF=$dir/containers.conf
}

# release_binaries: builds skiff (unless SKIFF names a prebuilt one) and skiff-rig, exporting
# SKIFF and RIG.
release_binaries() {
  if [ -z "${SKIFF:-}" ]; then
    cargo build --release -q --bin skiff -p skiff
    SKIFF=$PWD/target/release/skiff
  fi
  cargo build --release -q --bin skiff-rig -p skiff-test-rig
  RIG=$PWD/target/release/skiff-rig
  export SKIFF RIG
}

# Where every tool's store lives (a journaled ext4 loop file, see mount_bench_fs), and the
# tool image's build cache.
MNT=${SKIFF_BENCH_MNT:-/mnt/skiff-bench}
LOOP=${SKIFF_BENCH_IMG:-/var/tmp/skiff-bench.ext4}
CACHE=${CACHE:-/var/cache/skiff-bench/tools}
