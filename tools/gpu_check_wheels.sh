#!/usr/bin/env bash
# Build the wheels tools/gpu_check.sh installs on a GPU machine that cannot reach a registry.
#
# That machine is expected to have torch, torchvision, opencv, tensorboard, scipy, matplotlib,
# PyYAML, requests, filelock, tqdm and numpy (a usual CUDA image). It lacks torchreid (0.2.5 has no
# wheel on PyPI: built here from its sdist, pure Python), yacs, gdown (torchreid imports it) and
# gdown's HTML parser. All of these are pure-Python wheels (py3-none-any), so they install under
# any Python 3 there; faiss is not carried (the torch search backend runs on CUDA instead).
#
# Usage: tools/gpu_check_wheels.sh [DEST]        (default DEST: wheels/ in the repository root)
#        PYTHON=python3.12 tools/gpu_check_wheels.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo/wheels}"
python="${PYTHON:-$repo/.venv/bin/python}"
# Versions this project is tested with (the ones in .venv, `make setup`).
packages=(torchreid==0.2.5 yacs==0.1.8 gdown==6.5.1 beautifulsoup4==4.15.0 soupsieve==4.1.3)

if ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "gpu_check_wheels: $python has no pip; set PYTHON to an interpreter with pip" >&2
    exit 2
fi
mkdir -p "$dest"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$dest" "${packages[@]}"
for whl in "$dest"/*.whl; do
    case "$whl" in
        *-py3-none-any.whl | *-py2.py3-none-any.whl) ;;
        *) echo "gpu_check_wheels: $whl is not pure Python; it may not install there" >&2 ;;
    esac
done
echo "gpu_check_wheels: $(ls "$dest"/*.whl | wc -l) wheels in $dest ($(du -sh "$dest" | cut -f1))"
