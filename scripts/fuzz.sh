#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ one after another (cargo-fuzz, nightly toolchain).
#   scripts/fuzz.sh            FUZZ_SECONDS per target (default 600), for people
#   scripts/fuzz.sh --ci       a bounded run: FUZZ_CI_SECONDS per target (default 20)
#   scripts/fuzz.sh [--ci] T…  only the named targets
# Each target starts from its committed seeds (fuzz/corpus/T) plus what earlier runs here
# found (fuzz/target/corpus/T, not committed). A crash fails the script; its input is left in
# fuzz/artifacts/T/: fix it and turn it into a unit test next to the parser. Runs for people
# (not --ci) add a line to fuzz/hours.tsv (date, target, seconds, executions, cpu seconds), the
# record of how long each target has run in total (scripts/fuzz.sh --hours sums it: the CPU
# seconds where recorded, which do not count time the fuzzer waited for a busy machine).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
seconds=${FUZZ_SECONDS:-600}
record=1
if [ "${1:-}" = "--hours" ]; then
  awk -F'\t' 'NR > 1 { s[$2] += ($5 != "" ? $5 : $3); n[$2] += $4 } END { for (t in s) printf "%-16s %6.2f h %14d runs\n", t, s[t] / 3600, n[t] }' \
    fuzz/hours.tsv | sort
  exit 0
fi
if [ "${1:-}" = "--ci" ]; then
  seconds=${FUZZ_CI_SECONDS:-20}
  record=0
  shift
fi
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build
# CPU seconds (user + system) this shell's finished children have used so far, in $cpu_now
# (`times` in this shell: in a command substitution it would count the subshell's children).
child_cpu() {
  times >"target/times.$$.txt"
  cpu_now=$(tail -1 "target/times.$$.txt" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } printf "%d", n }')
  rm -f "target/times.$$.txt"
}
for t in "${targets[@]}"; do
  work=target/corpus/$t
  mkdir -p "$work" "artifacts/$t"
  echo "fuzz.sh: $t for ${seconds}s"
  log=target/fuzz-$t.log
  status=0
  child_cpu
  cpu0=$cpu_now
  cargo +nightly fuzz run "$t" "$work" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1 \
    || status=$?
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|panicked|SUMMARY|Test unit written' "$log" || true
  if [ "$record" = 1 ] && [ "$status" -eq 0 ]; then
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
    child_cpu
    cpu=$((cpu_now - cpu0))
    [ -f hours.tsv ] || printf 'date\ttarget\tseconds\texecutions\tcpu_seconds\n' >hours.tsv
    printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$seconds" "$runs" "$cpu" >>hours.tsv
  fi
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz.sh: $t found a crash (see fuzz/artifacts/$t/ and fuzz/$log)" >&2
    exit 1
  fi
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
