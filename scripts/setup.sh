#!/usr/bin/env bash
# Fresh-machine setup: system packages for headless rendering, then .venv with the CPU torch wheel first and the
# project with its development extras. Idempotent; `make setup` runs it when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libusb-1.0-0 chromium; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "installing system packages (headless rendering, RealSense USB, Chromium for the web-page tests): ${need[*]}"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    elif command -v sudo >/dev/null; then
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "warning: cannot install ${need[*]} (not root, no sudo); rendering tests will fail" >&2
    fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel of torch first: any other resolution of `torch` downloads a CUDA build of several GB.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev]"
# Meta's sam2 is an sdist: build it without its CUDA extension, against the torch above, without letting pip
# resolve its torchvision requirement.
if ! .venv/bin/python -c "import sam2" 2>/dev/null; then
    .venv/bin/python -m pip install -q setuptools wheel
    SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install -q --no-build-isolation --no-deps sam2==1.1.0
fi
# `docker compose config` checks docker-compose.yml in the tests; where the v2 plugin is missing, the Python
# docker-compose 1.29 in its own environment does the same check (its pins clash with the project's PyYAML).
if ! docker compose version >/dev/null 2>&1 && [ ! -x .venv/compose/bin/docker-compose ]; then
    if "$PYTHON" -m venv .venv/compose \
        && .venv/compose/bin/python -m pip install -q "PyYAML>=6,<7" \
        && .venv/compose/bin/python -m pip install -q --no-deps docker-compose==1.29.2 \
        && .venv/compose/bin/python -m pip install -q "docker>=5,<8" "dockerpty>=0.4.1" "docopt>=0.6.1" \
            "jsonschema>=2.5.1,<4" "python-dotenv>=0.13,<1" "requests>=2.20" "texttable>=0.9" \
            "websocket-client>=0.32,<2" "distro>=1.5"; then
        echo "docker-compose 1.29 installed in .venv/compose for compose-file checks"
    else
        echo "warning: could not install docker-compose for compose-file checks; that test will be skipped" >&2
    fi
fi
touch .venv/.installed
echo "setup done: .venv ready"
