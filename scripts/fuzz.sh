#!/usr/bin/env bash
# Fuzzes the event decoder, the feature computation and the session rule with libFuzzer
# (cargo-fuzz target fuzz/fuzz_targets/decode_features_session.rs) for a fixed time.
#
#   scripts/fuzz.sh [SECONDS]        default 60
#
# Installs cargo-fuzz when missing (cargo install --locked into $CLICKPIPE_TOOLS/cargo-fuzz, default
# $HOME/.cache/clickpipe/cargo-fuzz; a few minutes the first time), builds the target on the nightly
# toolchain into fuzz/target (or $CLICKPIPE_FUZZ_TARGET_DIR) and runs it single-process on the seed
# corpus fuzz/corpus/<target>/ (checked in, never written) plus a working corpus under the target
# directory that libFuzzer grows and later runs start from. Prints executions, exec/s, coverage and
# findings; exits non-zero when the target crashed (an invariant broken, a panic, a timeout or an
# out-of-memory), with the reproducer in fuzz/artifacts/<target>/ (replay it with
# `cargo +nightly fuzz run <target> <file>` from fuzz/, or this script's printed command).
#
# CLICKPIPE_FUZZ_TARGET   target name            default decode_features_session
# CLICKPIPE_FUZZ_ARGS     extra libFuzzer flags   e.g. "-seed=1 -max_len=8192"
# CLICKPIPE_FUZZ_FEATURES features of fuzz/Cargo.toml to build with, e.g. unbounded-session
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
SECONDS_TO_RUN="${1:-60}"
if ! [[ "$SECONDS_TO_RUN" =~ ^[0-9]+$ ]] || ((SECONDS_TO_RUN == 0)); then
    echo "usage: scripts/fuzz.sh [SECONDS]  (a whole number above 0)" >&2
    exit 2
fi
TARGET="${CLICKPIPE_FUZZ_TARGET:-decode_features_session}"
CARGO_FUZZ_VERSION="0.13.2"
TOOLS="${CLICKPIPE_TOOLS:-$HOME/.cache/clickpipe}"
FUZZ_ROOT="$TOOLS/cargo-fuzz"
TARGET_DIR="${CLICKPIPE_FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
SEEDS="$ROOT/fuzz/corpus/$TARGET"
WORK="$TARGET_DIR/corpus/$TARGET"
ARTIFACTS="$ROOT/fuzz/artifacts/$TARGET"
T0=$SECONDS

say() { printf '[fuzz %4ds] %s\n' "$((SECONDS - T0))" "$*"; }

if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi

if [[ "$("$FUZZ_ROOT/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into $FUZZ_ROOT"
    # Its own target directory: a CARGO_TARGET_DIR of the caller is not the place for it.
    CARGO_TARGET_DIR="$TOOLS/cargo-fuzz-build" \
        cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$FUZZ_ROOT" 2>&1 |
        { grep -v 'to your PATH' || true; }
    rm -rf "$TOOLS/cargo-fuzz-build"
fi
export PATH="$FUZZ_ROOT/bin:$PATH"

# Release with debug assertions (-a), so an integer overflow panics as it does in a debug build.
# No sanitizer: the code under test is safe Rust, and ASan would halve the executions.
BUILD_FLAGS=(--release --debug-assertions --sanitizer none --target-dir "$TARGET_DIR")
if [[ -n "${CLICKPIPE_FUZZ_FEATURES:-}" ]]; then
    BUILD_FLAGS+=(--features "$CLICKPIPE_FUZZ_FEATURES")
fi

say "building $TARGET (nightly, into $TARGET_DIR)"
(cd fuzz && cargo +nightly fuzz build "${BUILD_FLAGS[@]}" "$TARGET")

mkdir -p "$WORK" "$ARTIFACTS"
LOG="$TARGET_DIR/fuzz-$TARGET.log"
before="$(ls -1 "$ARTIFACTS" | sort)"
say "running $TARGET for ${SECONDS_TO_RUN}s (seeds: fuzz/corpus/$TARGET, working corpus: $WORK)"
set +e
# shellcheck disable=SC2086 # CLICKPIPE_FUZZ_ARGS is a list of flags
(cd fuzz && cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$TARGET" "$WORK" "$SEEDS" -- \
    -max_total_time="$SECONDS_TO_RUN" \
    -dict="$ROOT/fuzz/events.dict" \
    -artifact_prefix="$ARTIFACTS/" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    ${CLICKPIPE_FUZZ_ARGS:-}) >"$LOG" 2>&1
rc=$?
set -e

stat() { sed -n "s/^stat::$1: *//p" "$LOG" | tail -1; }
execs="$(stat number_of_executed_units)"
rate="$(stat average_exec_per_sec)"
added="$(stat new_units_added)"
rss="$(stat peak_rss_mb)"
# The last status line: "#N DONE cov: E ft: F corp: U/SIZE ...".
last="$(grep -E '^#[0-9]+' "$LOG" | tail -1)"
cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
corp="$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")"
say "executions: ${execs:-?}  exec/s: ${rate:-?}  coverage: ${cov:-?} edges, ${ft:-?} features  corpus: ${corp:-?} (units/bytes)  new units: ${added:-?}  peak RSS: ${rss:-?} MB"

new="$(comm -13 <(echo "$before") <(ls -1 "$ARTIFACTS" | sort) | sed '/^$/d')"
if [[ -n "$new" ]] || ((rc != 0)); then
    say "FINDINGS (libFuzzer exit code $rc; full log: $LOG):"
    grep -E -m1 -A1 'panicked at' "$LOG" || true
    grep -E '^==[0-9]+== ERROR|^SUMMARY' "$LOG" || true
    [[ -n "$new" ]] || tail -20 "$LOG"
    for f in $new; do
        say "reproducer fuzz/artifacts/$TARGET/$f ($(wc -c <"$ARTIFACTS/$f") bytes), base64: $(base64 -w0 "$ARTIFACTS/$f" | head -c 2000)"
        say "replay: (cd fuzz && cargo +nightly fuzz run ${BUILD_FLAGS[*]} $TARGET artifacts/$TARGET/$f)"
    done
    exit 1
fi
say "findings: none"
