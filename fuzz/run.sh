#!/usr/bin/env bash
# Builds every fuzz target (libFuzzer, stable toolchain) and runs each for SECONDS, default 60,
# as many at a time as there are cores.
# Exits non-zero if any target crashes, hangs or runs out of memory; the input that did it is
# left in fuzz/artifacts/TARGET/. Installs what it needs, so that it runs on a fresh machine.
#
#   bash fuzz/run.sh 20                  # 20 s per target
#   bash fuzz/run.sh 600 layer template  # some targets only
#
# With SYSCTR_FUZZ_SEED=N (as CI runs it) each target starts from its corpus only, with that
# seed: a gate that finds again what it found before, rather than new inputs left by earlier runs.
set -euo pipefail
seconds=${1:-60}
shift || true
cd "$(dirname "$0")"
fuzz=$(pwd)
all_targets=(layer template manifest reference registries_conf signature spec_check)
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")

# libFuzzer is C++ (built by libfuzzer-sys); sysctr links libostree and OpenSSL.
packages=(g++ pkg-config libostree-dev libssl-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

# The instrumentation cargo-fuzz adds, with options that stable rustc takes: SanitizerCoverage
# (edge counters, the PC table, comparison operands, stack depth) for libFuzzer to follow, and
# the checks of a test build. No sanitizer (-Zsanitizer needs nightly): Rust code is memory
# safe, and libFuzzer still catches panics, aborts, hangs and memory blow-ups. --target keeps
# these flags off build scripts and proc macros.
rustflags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
)
host=$(rustc -vV | sed -n 's/^host: //p')
# Outside the work tree, so that a fresh clone on the same machine (CI's) builds incrementally.
export CARGO_TARGET_DIR=${SYSCTR_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sysctr-fuzz}
build_start=$SECONDS
RUSTFLAGS="${rustflags[*]}" cargo build --locked --release --target "$host" --bins
echo "fuzz: built in $((SECONDS - build_start)) s"

bin=$CARGO_TARGET_DIR/$host/release
mkdir -p "$CARGO_TARGET_DIR/logs"

# Runs one target; its log goes to logs/TARGET.log, its verdict to logs/TARGET.status.
fuzz_one() {
  local t=$1
  # New inputs go to the first corpus directory, outside the repository; corpus/TARGET holds
  # the seeds and every input that once found a bug, and is replayed first.
  local work=$CARGO_TARGET_DIR/corpus/$t log=$CARGO_TARGET_DIR/logs/$t.log extra=()
  local options=(-max_total_time="$seconds" -timeout=25 -rss_limit_mb=4096 -print_final_stats=1
                 -artifact_prefix="$fuzz/artifacts/$t/")
  if [ -n "${SYSCTR_FUZZ_SEED:-}" ]; then
    work=$CARGO_TARGET_DIR/corpus-seeded/$t
    rm -rf "$work"
    options+=(-seed="$SYSCTR_FUZZ_SEED")
  fi
  mkdir -p "$work" "$fuzz/artifacts/$t"
  if [ -f "$fuzz/options/$t" ]; then read -r -a extra < "$fuzz/options/$t"; options+=("${extra[@]}"); fi
  if [ -f "$fuzz/dict/$t.dict" ]; then options+=(-dict="$fuzz/dict/$t.dict"); fi
  if "$bin/$t" "${options[@]}" "$work" "$fuzz/corpus/$t" >"$log" 2>&1; then
    echo passed > "$CARGO_TARGET_DIR/logs/$t.status"
  else
    echo failed > "$CARGO_TARGET_DIR/logs/$t.status"
  fi
}

# As many targets at a time as there are cores.
jobs=$(nproc)
echo "fuzz: ${#targets[@]} targets, $seconds s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
  rm -f "$CARGO_TARGET_DIR/logs/$t.status"
  fuzz_one "$t" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

passed=0
failed=()
for t in "${targets[@]}"; do
  log=$CARGO_TARGET_DIR/logs/$t.log
  if [ "$(cat "$CARGO_TARGET_DIR/logs/$t.status" 2>/dev/null)" = passed ]; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz: $t passed: ${runs:-?} runs, $cov"
    passed=$((passed + 1))
  else
    failed+=("$t")
    echo "fuzz: $t FAILED; the end of its log ($log):"
    tail -n 60 "$log"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with $bin/TARGET INPUT)"
fi
echo "fuzz: $passed passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
