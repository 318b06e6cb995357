#!/usr/bin/env bash
# Side by side: GNU tar -xzf (one layer; two layers one after the other; two at once) against
# rootfs-cache committing the same layers (both digests verified), on a journaled ext4 loop file.
# Prints hyperfine's table (medians) and peak RSS. Run as root from the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MNT=${SKIFF_BENCH_MNT:-/mnt/skiff-bench}
IMG=${SKIFF_BENCH_IMG:-/var/tmp/skiff-bench.ext4}
RUNS=${RUNS:-7}

mount_bench_fs "$MNT" "$IMG"
cargo build --release -q -p skiff-test-rig --bin skiff-rig
RIG=$PWD/target/release/skiff-rig
cd "$MNT"
[ -f l1.tgz ] || "$RIG" gen-layer --seed 1 l1.tgz >/dev/null
[ -f l2.tgz ] || "$RIG" gen-layer --seed 2 l2.tgz >/dev/null

clean='rm -rf t s; mkdir -p t/1 t/2; sync'
hyperfine --runs "$RUNS" --warmup 1 --prepare "$clean" --export-json extract.json \
  -n 'tar -xzf, 1 layer' 'tar -xzf l1.tgz -C t/1' \
  -n 'rootfs-cache, 1 layer' "$RIG unpack --root s l1.tgz" \
  -n 'tar -xzf, 2 layers one by one' 'tar -xzf l1.tgz -C t/1 && tar -xzf l2.tgz -C t/2' \
  -n 'tar -xzf, 2 layers at once' 'tar -xzf l1.tgz -C t/1 & tar -xzf l2.tgz -C t/2 & wait' \
  -n 'rootfs-cache, 2 layers at once' "$RIG unpack --root s l1.tgz l2.tgz"
python3 - extract.json <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
base = {r["command"]: r["median"] for r in res}
print("| command | median s | min s | max s |")
print("|---|---:|---:|---:|")
for r in res:
    print(f"| {r['command']} | {r['median']:.3f} | {r['min']:.3f} | {r['max']:.3f} |")
one = base["tar -xzf, 1 layer"] / base["rootfs-cache, 1 layer"]
two = base["tar -xzf, 2 layers one by one"] / base["rootfs-cache, 2 layers at once"]
print(f"rootfs-cache vs tar, 1 layer: {one:.2f}x faster; 2 layers vs tar one by one: {two:.2f}x faster")
PY
eval "$clean"
/usr/bin/time -f 'peak RSS rootfs-cache, 2 layers: %M KiB' "$RIG" unpack --root s l1.tgz l2.tgz
eval "$clean"
/usr/bin/time -f 'peak RSS tar -xzf (tar process), 1 layer: %M KiB' tar -xzf l1.tgz -C t/1
rm -rf t s
