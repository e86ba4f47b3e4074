# Shared by scripts/dev and scripts/test: install what a fresh Debian/Ubuntu machine lacks.
set -euo pipefail

HOOKSTREAM_CACHE="${HOOKSTREAM_CACHE:-$HOME/.cache/hookstream}"
TANSU_VERSION="0.6.0"
CARGO_FUZZ_VERSION="0.13.2"

ensure_system_packages() {
  local wanted=(build-essential pkg-config cmake libclang-dev zlib1g-dev curl sqlite3 python3-venv libssl-dev) missing=()
  for package in "${wanted[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if ((${#missing[@]})); then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "==> installing system packages: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || { echo "cargo is required: install Rust from rustup" >&2; exit 1; }
}

# The Tansu broker used by the end-to-end tests and benchmarks, built once into the cache
# (≈10 min): `libsql` for the durable sqlite engine the tests use, `dynostore` for the
# in-memory engine of the benchmarks.
TANSU_FEATURES="libsql,dynostore"
ensure_tansu() {
  local root="$HOOKSTREAM_CACHE/tansu-$TANSU_VERSION"
  if [ ! -x "$root/bin/tansu" ] || [ "$(cat "$root/features" 2>/dev/null)" != "$TANSU_FEATURES" ]; then
    echo "==> installing the Tansu $TANSU_VERSION test broker ($TANSU_FEATURES) into $root (one time, about 10 minutes)" >&2
    cargo install tansu --locked --force --version "$TANSU_VERSION" --features "$TANSU_FEATURES" \
      --root "$root" --target-dir "$HOOKSTREAM_CACHE/tansu-build"
    echo "$TANSU_FEATURES" > "$root/features"
  fi
  export TANSU_BIN="$root/bin/tansu"
}

# Python tools of schemas/check.py (JSON Schema validation, an independent Avro codec).
ensure_schema_tools() {
  local venv="$HOOKSTREAM_CACHE/schema-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import jsonschema, fastavro, rfc3339_validator, standardwebhooks, yaml, kubernetes_validate' 2>/dev/null; then
    echo "==> installing the schema checker's and the delivery tests' Python packages into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      jsonschema==4.26.0 fastavro==1.13.1 rfc3339-validator==0.1.4 standardwebhooks==1.0.0 \
      pyyaml==6.0.3 kubernetes-validate==1.37.0
  fi
  export SCHEMA_PYTHON="$venv/bin/python"
}

# promtool (Debian's `prometheus` package) for scripts/check-ops.py: the alert rules, their
# unit tests and the Prometheus configuration in compose/.
ensure_promtool() {
  if ! command -v promtool >/dev/null; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "==> installing promtool (apt package prometheus)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
}

# cargo-fuzz for scripts/fuzz, built once into the cache (≈2 min). It drives libFuzzer on the
# stable toolchain with `--sanitizer none`.
ensure_cargo_fuzz() {
  local root="$HOOKSTREAM_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
  if [ ! -x "$root/bin/cargo-fuzz" ]; then
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION into $root (one time, about 2 minutes)" >&2
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" \
      --root "$root" --target-dir "$HOOKSTREAM_CACHE/cargo-fuzz-build"
  fi
  export PATH="$root/bin:$PATH"
}
