#!/usr/bin/env bash
# Cold start, side by side: the time from the command to the first byte of the payload's
# output, from empty stores, for `skiff run --lazy` (the image's lazy index, files fetched as
# they are read), `skiff run` (full pull first) and `podman run`, on the 7-layer Debian tool
# image (benches/build-tool-image.sh), for five commands: python3, git, node, java, and one that
# reads the whole image (tar of /usr into a pipe: `tar -cf /dev/null` would not do, GNU tar
# skips the contents of files when its archive is /dev/null). Through a worker-like link (`skiff-rig link`: RATE bytes
# per second shared by all connections, RTT_MS per request) and on loopback. Rounds are
# interleaved (every tool and command once per round); prints medians, min, max and ratios.
# Every store lives on one journaled ext4 loop file (benches/lib.sh). After the runs, the lazy
# run's store is checked against a full pull's (same image, same layers, `verify` clean).
# Run as root from the repository: ROUNDS=N (default 3), LINKS="link loopback", RATE, RTT_MS,
# SKIFF=BINARY to use a prebuilt skiff, ONLY=REGEX to time only the commands whose name matches.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
REG=${REG:-127.0.0.1:5000}
LINK=${LINK_ADDR:-127.0.0.1:5002}
REPO=bench/tools:1
ROUNDS=${ROUNDS:-3}
LINKS=${LINKS:-"link loopback"}
ONLY=${ONLY:-}
RATE=${RATE:-25000000}
RTT_MS=${RTT_MS:-20}
export CACHE

for pair in podman:podman hyperfine:hyperfine debootstrap:debootstrap; do
  command -v "${pair#*:}" >/dev/null || {
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pair%%:*}"
  }
done
mount_bench_fs "$MNT" "$LOOP"
cgroups_for_crun
bash scripts/setup.sh >/dev/null
release_binaries
bash scripts/registry.sh >/dev/null
IMAGE=$REG/$REPO bash benches/build-tool-image.sh >/dev/null
"$SKIFF" --root "$MNT/index-store" index push "$REG/$REPO"

# podman: its own configuration (plain HTTP to both registry addresses), storage on the mount.
podman_env "$MNT/podman" "$REG" "$LINK"
# Every tool must run the image before anything is timed (a failing run has no first byte).
podman run --rm --net host "$REG/$REPO" true >/dev/null 2>"$MNT/podman.err" ||
  { echo "podman cannot run $REG/$REPO:" >&2; tail -n 3 "$MNT/podman.err" >&2; exit 1; }
podman rmi -a -f >/dev/null 2>&1 || true

"$RIG" link --listen "$LINK" --upstream "$REG" --rate "$RATE" --rtt-ms "$RTT_MS" &
link_pid=$!
trap 'kill $link_pid 2>/dev/null || true' EXIT
sleep 0.5

# name|command (the first byte of its output ends the measurement)
COMMANDS=(
  "python3|python3 -c 'print(42)'"
  "git|git --version"
  "node|node -e 'console.log(1)'"
  "java|java -version 2>&1"
  "whole image|tar -cf - /usr | wc -c"
)
# Time to the first byte of stdout, and to the end, of one shell command: "first total rc".
first_byte() {
  python3 - "$1" <<'PY'
import subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1], shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
first = p.stdout.read(1)
t1 = time.monotonic()
p.stdout.read()
rc = p.wait()
print(f"{t1 - t0:.3f} {time.monotonic() - t0:.3f} {rc if first else 'no-output'}")
PY
}
OUT=$MNT/coldstart.tsv
: >"$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for link in $LINKS; do
    host=$REG
    [ "$link" = link ] && host=$LINK
    for entry in "${COMMANDS[@]}"; do
      name=${entry%%|*}; cmd=${entry#*|}
      [[ -z $ONLY || $name =~ $ONLY ]] || continue
      for tool in "skiff lazy" "skiff full" podman; do
        rm -rf "$MNT/skiff"; podman rmi -a -f >/dev/null 2>&1 || true; sync
        case $tool in
          "skiff lazy") run="$SKIFF --root $MNT/skiff run --rm --lazy $host/$REPO sh -c \"$cmd\"" ;;
          "skiff full") run="$SKIFF --root $MNT/skiff run --rm $host/$REPO sh -c \"$cmd\"" ;;
          podman) run="podman run --rm --net host $host/$REPO sh -c \"$cmd\"" ;;
        esac
        read -r first total rc < <(first_byte "$run")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$link" "$name" "$tool" "$first" "$total" "$rc" >>"$OUT"
        echo "round $round $link $name $tool: first byte ${first}s, end ${total}s ($rc)"
      done
    done
  done
done

python3 - "$OUT" "$ROUNDS" "$RATE" "$RTT_MS" <<'PY' | tee "$MNT/coldstart.md"
import collections, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
rounds, rate, rtt = sys.argv[2], int(sys.argv[3]), sys.argv[4]
t = collections.defaultdict(list)
bad = [r for r in rows if r[5] != "0"]
for link, name, tool, first, total, rc in rows:
    t[(link, name, tool)].append(float(first))
for link in dict.fromkeys(r[0] for r in rows):
    where = f"{rate / 1e6:g} MB/s, {rtt} ms round trips" if link == "link" else "loopback"
    print(f"\n{where}, time to first output byte, median of {rounds} (min-max), seconds:\n")
    print("| command | skiff lazy | skiff full | podman | full / lazy | podman / lazy |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in dict.fromkeys(r[1] for r in rows):
        m = {}
        cells = []
        for tool in ("skiff lazy", "skiff full", "podman"):
            v = t[(link, name, tool)]
            m[tool] = statistics.median(v)
            cells.append(f"{m[tool]:.2f} ({min(v):.2f}-{max(v):.2f})")
        print(f"| {name} | " + " | ".join(cells)
              + f" | {m['skiff full'] / m['skiff lazy']:.1f}x | {m['podman'] / m['skiff lazy']:.1f}x |")
if bad:
    print(f"\n{len(bad)} runs failed: {bad}")
PY

# The lazy run's store ends as a full pull's: same image, same layers, verify clean.
rm -rf "$MNT/skiff" "$MNT/skiff-full"
"$SKIFF" --root "$MNT/skiff" run --rm --lazy "$REG/$REPO" true
"$SKIFF" --root "$MNT/skiff-full" pull -q "$REG/$REPO" >/dev/null
"$SKIFF" --root "$MNT/skiff" verify >/dev/null && echo "lazy store: verify ok"
if diff <(ls "$MNT/skiff/layers/sha256") <(ls "$MNT/skiff-full/layers/sha256") >/dev/null &&
   diff <(ls "$MNT/skiff/images/sha256") <(ls "$MNT/skiff-full/images/sha256") >/dev/null; then
  echo "lazy store: the same image and layers as a full pull's"
else
  echo "lazy store: DIFFERS from a full pull's"
fi
rm -rf "$MNT/skiff" "$MNT/skiff-full"
podman rmi -a -f >/dev/null 2>&1 || true
