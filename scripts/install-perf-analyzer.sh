#!/usr/bin/env bash
# Triton's load tool, perf_analyzer, into the virtual environment: $VENV/bin/perf_analyzer.
#
# PyPI's perf-analyzer wheels are built for glibc 2.38 (manylinux_2_38) and GCC 13's
# libstdc++; Debian 12 has glibc 2.36, so pip refuses the wheel and its binary would not
# load. This script fetches the pinned wheel for its own platform tag, takes the binary
# out, and runs it with the C runtime of the next Debian release (libc6, libstdc++6 and
# libgcc-s1 unpacked from their .debs into $VENV/perf-analyzer/runtime, never installed
# over the system's): the wrapper starts that runtime's loader on the binary. Where the
# system's glibc is new enough the runtime is still used: one way to run everywhere.
#
# Needs PyPI and deb.debian.org; no root. Idempotent: does nothing once the wrapper runs.
set -euo pipefail

VENV=${1:-.venv}
VERSION=2.60.0 # perf-analyzer on PyPI
SUITE=trixie   # the Debian release whose C runtime the binary needs
HOME_DIR="$VENV/perf-analyzer"
WRAPPER="$VENV/bin/perf_analyzer"

if [ -x "$WRAPPER" ] && "$WRAPPER" --version >/dev/null 2>&1; then
    exit 0
fi
rm -rf "$HOME_DIR"
mkdir -p "$HOME_DIR/wheel" "$HOME_DIR/apt/lists/partial" "$HOME_DIR/apt/cache/archives/partial" \
    "$HOME_DIR/debs" "$HOME_DIR/runtime"
HOME_DIR=$(cd "$HOME_DIR" && pwd)

echo "==> perf_analyzer $VERSION (wheel for manylinux_2_38)"
"$VENV/bin/pip" download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_38_x86_64 "perf-analyzer==$VERSION" -d "$HOME_DIR/wheel"
"$VENV/bin/python" - "$HOME_DIR" <<'EOF'
import pathlib, stat, sys, zipfile

home = pathlib.Path(sys.argv[1])
wheel = next((home / "wheel").glob("perf_analyzer-*.whl"))
with zipfile.ZipFile(wheel) as z:
    data = z.read("perf_analyzer/bin/perf_analyzer")
target = home / "perf_analyzer"
target.write_bytes(data)
target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
EOF

echo "==> C runtime from Debian $SUITE (libc6, libstdc++6, libgcc-s1), unpacked, not installed"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
    "http://deb.debian.org/debian $SUITE main" >"$HOME_DIR/sources.list"
APT=(-o "Dir::Etc::sourcelist=$HOME_DIR/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$HOME_DIR/apt/lists" -o "Dir::Cache=$HOME_DIR/apt/cache"
    -o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)")
apt-get "${APT[@]}" update -qq
(cd "$HOME_DIR/debs" && apt-get "${APT[@]}" download -qq libc6 libstdc++6 libgcc-s1)
for deb in "$HOME_DIR"/debs/*.deb; do
    dpkg-deb -x "$deb" "$HOME_DIR/runtime"
done
rm -rf "$HOME_DIR/apt" "$HOME_DIR/debs" "$HOME_DIR/wheel"

LIBS="$HOME_DIR/runtime/usr/lib/x86_64-linux-gnu"
cat >"$WRAPPER" <<EOF
#!/bin/sh
# perf_analyzer $VERSION on the C runtime in $HOME_DIR/runtime (scripts/install-perf-analyzer.sh)
exec "$LIBS/ld-linux-x86-64.so.2" --library-path "$LIBS:/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu" "$HOME_DIR/perf_analyzer" "\$@"
EOF
chmod +x "$WRAPPER"
"$WRAPPER" --version
