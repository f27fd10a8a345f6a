#!/usr/bin/env bash
# The one test command: installs what the tests need (the two real models), checks formatting and
# lints, then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

export TORCHLESS_MODELS_DIR="${TORCHLESS_MODELS_DIR:-$PWD/models}"
# Two cores: keep builds and test threads from oversubscribing them.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

bash tools/fetch-models.sh

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release -- --test-threads=2
