#!/usr/bin/env bash
# Runs every libFuzzer harness (build-fuzz/fuzz_*, from `make fuzz-build`) for FUZZ_SECONDS
# each, niced, one job each, FUZZ_JOBS of them at a time (default 2: a harness per core, so the
# four take two rounds of FUZZ_SECONDS, not four).
#
#   FUZZ_SECONDS   seconds per harness (default 60)
#   FUZZ_JOBS      harnesses run at the same time (default 2)
#   FUZZ_BUILD     build folder (default build-fuzz)
#   FUZZ_ONLY      optional space-separated harness names (model image npy convert)
#   SHARED         ../shared (the CIFAR-10 model and JPEGs the seeds come from)
#
# First every file in tests/fuzz/regressions/<harness>/ is replayed (each once crashed or
# exhausted memory; they must now fail cleanly, in bounded memory). Then
# seeds are made from real files (tests/fuzz/make_seeds.py) and the fuzzer runs on
# FUZZ_BUILD/corpus/<harness>, which is kept and grows from run to run. A crash leaves its input
# in FUZZ_BUILD/artifacts/<harness>/ and fails the run. Each run appends a line to
# FUZZ_BUILD/fuzz-runs.tsv: date, harness, seconds, executions, crashes.
set -u
cd "$(dirname "$0")/../.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
PYTHON=${PYTHON:-/usr/bin/python3}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
harnesses=${FUZZ_ONLY:-model image npy convert}
max_len_model=1200000 max_len_image=65536 max_len_npy=65536
# Value profiling helps the parsers' magic numbers and keywords, but on model files every new
# CRC value counts as progress and fills the corpus with mutated 1 MB models: not for model.
value_profile_model=0 value_profile_image=1 value_profile_npy=1

"$PYTHON" tests/fuzz/make_seeds.py "$FUZZ_BUILD/seeds" "$SHARED" || { echo "fuzz: cannot make seeds"; exit 1; }
FUZZ_JOBS=${FUZZ_JOBS:-2}

# run_harness H: replays H's saved regressions, fuzzes it; prints one ok/FAIL line (and the
# report), returns 1 on any failure.
run_harness() {
  local h=$1 failed=0
  if [ "$h" = convert ]; then   # the Python converter: a mutation loop, not libFuzzer
    local log=$FUZZ_BUILD/fuzz-convert.log start rc line execs
    start=$(date +%s)
    nice -n 10 "$PYTHON" tests/fuzz/fuzz_convert.py "$FUZZ_SECONDS" "$SHARED" \
      "$FUZZ_BUILD/artifacts/convert" >"$log" 2>&1
    rc=$?
    line=$(grep '^fuzz_convert:' "$log" | tail -n 1)
    execs=$(echo "$line" | sed -n 's/^fuzz_convert: \([0-9]*\) executions.*/\1/p')
    printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" convert "$(( $(date +%s) - start ))" \
      "${execs:-?}" "$([ $rc = 0 ] && echo 0 || echo 1)" >>"$FUZZ_BUILD/fuzz-runs.tsv"
    if [ $rc -ne 0 ]; then echo "FAIL fuzz_convert: exit $rc, log $log"; tail -n 20 "$log"; return 1
    else echo "ok   $line"; fi
    return 0
  fi
  local bin=$FUZZ_BUILD/fuzz_$h
  [ -x "$bin" ] || { echo "fuzz: $bin is missing (make fuzz-build)"; return 1; }
  if [ -d "tests/fuzz/regressions/$h" ] && [ -n "$(ls "tests/fuzz/regressions/$h")" ]; then
    # A saved input is small: decoding it may not allocate more than 256 MB (the fuzzing
    # itself allows 2 GB, for the legitimately large allocations of big valid inputs).
    if ! "$bin" -malloc_limit_mb=256 -rss_limit_mb=2048 tests/fuzz/regressions/"$h"/* \
        >"$FUZZ_BUILD/regressions-$h.log" 2>&1; then
      echo "FAIL fuzz_$h: a saved input in tests/fuzz/regressions/$h fails again (crash, sanitizer" \
           "report or an allocation over 256 MB; log $FUZZ_BUILD/regressions-$h.log):"
      grep -m 3 -E 'Running:|ERROR|runtime error' "$FUZZ_BUILD/regressions-$h.log" | sed 's/^/    /'
      return 1
    fi
  fi
  mkdir -p "$FUZZ_BUILD/corpus/$h" "$FUZZ_BUILD/artifacts/$h"
  local log=$FUZZ_BUILD/fuzz-$h.log
  local max_len_var=max_len_$h value_profile_var=value_profile_$h
  local start rc secs execs crashes
  start=$(date +%s)
  # -timeout is wall time: 120 s, because on a machine with far more runnable work than cores
  # a niced fuzzer got 1 % of a core and a 0.5 s input took 50 s (a false "timeout").
  nice -n 10 "$bin" -max_total_time="$FUZZ_SECONDS" -max_len="${!max_len_var}" -timeout=120 \
    -rss_limit_mb=2048 -use_value_profile="${!value_profile_var}" -print_final_stats=1 -dict="tests/fuzz/$h.dict" \
    -artifact_prefix="$FUZZ_BUILD/artifacts/$h/" "$FUZZ_BUILD/corpus/$h" "$FUZZ_BUILD/seeds/$h" \
    >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  crashes=$(ls "$FUZZ_BUILD/artifacts/$h" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$h" "$secs" "${execs:-?}" "$crashes" \
    >>"$FUZZ_BUILD/fuzz-runs.tsv"
  if [ $rc -ne 0 ]; then
    echo "FAIL fuzz_$h: exit $rc after ${secs}s; input in $FUZZ_BUILD/artifacts/$h/, log $log"
    grep -m 5 -E 'ERROR|runtime error|SUMMARY' "$log" | sed 's/^/    /'
    failed=1
  else
    echo "ok   fuzz_$h: ${execs:-?} executions in ${secs}s, corpus $(ls "$FUZZ_BUILD/corpus/$h" | wc -l) files"
  fi
  return $failed
}

# FUZZ_JOBS harnesses at a time; each one's lines are printed when its round ends.
failed=0
set -- $harnesses
while [ $# -gt 0 ]; do
  pids=() names=()
  for _ in $(seq "$FUZZ_JOBS"); do
    [ $# -gt 0 ] || break
    run_harness "$1" >"$FUZZ_BUILD/run-$1.out" 2>&1 &
    pids+=($!) names+=("$1")
    shift
  done
  for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || failed=1
    cat "$FUZZ_BUILD/run-${names[$k]}.out"
  done
done
exit $failed
