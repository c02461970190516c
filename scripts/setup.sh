#!/usr/bin/env bash
# One-command setup: installs what is missing, never replaces an installed torch.
#   bash scripts/setup.sh            # runtime + test dependencies
#   SETUP_NO_APT=1 bash scripts/setup.sh   # skip Debian packages (Java for pycocoevalcap's jars if missing, Chromium for the report test)
#   bash scripts/setup.sh --offline DIR    # air-gapped: every wheel from DIR (scripts/make_wheelhouse.sh), no network
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP_SOURCE=()   # where pip looks: its configured indexes, or only the wheelhouse
OFFLINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) [ -d "${2:-}" ] || { echo "setup.sh: --offline needs a wheelhouse folder (scripts/make_wheelhouse.sh)" >&2; exit 2; }
               OFFLINE=$(cd "$2" && pwd); PIP_SOURCE=(--no-index --find-links "$OFFLINE"); shift 2 ;;
    *) echo "setup.sh: unknown argument $1 (usage: bash scripts/setup.sh [--offline WHEELHOUSE_DIR])" >&2; exit 2 ;;
  esac
done

# 1. torch first. An existing torch (CPU or CUDA) is pinned so pip cannot swap it for another build.
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "$OFFLINE" ]; then
    "$PY" -m pip install "${PIP_SOURCE[@]}" -c "$OFFLINE/constraints.txt" torch  # the torch the wheelhouse was made with
  elif command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install ${TORCH_SPEC:-torch}
  else
    # CPU machine: a CPU build (this project's dev/CI machines keep torch 2.13.0 CPU on disk).
    "$PY" -m pip install ${TORCH_SPEC:-torch==2.13.0} || \
      "$PY" -m pip install --index-url https://download.pytorch.org/whl/cpu torch
  fi
fi
TORCH_VER=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
CONSTRAINTS=$(mktemp)
echo "torch==${TORCH_VER}" > "$CONSTRAINTS"
# A torchvision that fails at import makes transformers think it is usable: warn (it stays the user's choice).
if "$PY" -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('torchvision') else 1)" 2>/dev/null \
   && ! "$PY" -c "import torchvision" 2>/dev/null; then
  echo "WARNING: torchvision is installed but fails to import; uninstall it (pip uninstall torchvision): the product runs image-only without it." >&2
fi

# 2. Python packages (torch held at the installed version).
"$PY" -m pip install -q "${PIP_SOURCE[@]}" -c "$CONSTRAINTS" -r requirements.txt -r requirements-test.txt
rm -f "$CONSTRAINTS"
# This repository itself, editable and without dependencies (they are above): `python -m train.finetune` and the
# medvl-* commands then work from any directory, on paths relative to it.
"$PY" -m pip install -q "${PIP_SOURCE[@]}" --no-deps --no-build-isolation -e . \
  || echo "NOTE: the repository is not installed (no setuptools here?): run python -m ... from $(pwd) or set PYTHONPATH=$(pwd)." >&2

# 3. Debian packages: Java if missing (pycocoevalcap runs jars) and Chromium
#    (headless, for the test that renders the HTML report). As root, or through passwordless sudo.
SUDO=""
[ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && SUDO="sudo -n"; } || true
if [ -z "${SETUP_NO_APT:-}" ] && [ -z "$OFFLINE" ] && command -v apt-get >/dev/null 2>&1 \
   && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
  pkgs=()
  command -v java >/dev/null 2>&1 || pkgs+=(default-jre-headless)
  command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
  if [ ${#pkgs[@]} -gt 0 ]; then
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
fi

# 4. Build DeepSpeed's CPU comm op ahead (first multi-process run otherwise JIT-builds it).
"$PY" -c "from deepspeed.ops.op_builder import ShareMemCommBuilder as B; B().load(verbose=False)" >/dev/null 2>&1 || true

# 5. The oldest supported transformers (the GPU image's 5.17), beside the installed one, for
#    tests/test_transformers_oldest.py (the speed-path tests run under it too). Git-ignored. It needs a
#    huggingface-hub < 2 (which uses httpx); the rest of its dependencies are the installed ones.
OLDEST_DIR=.deps/transformers517
if [ ! -f "$OLDEST_DIR/transformers/__init__.py" ]; then
  rm -rf "$OLDEST_DIR"
  "$PY" -m pip install -q "${PIP_SOURCE[@]}" --no-deps --target "$OLDEST_DIR" "transformers==5.17.*" \
      "huggingface-hub>=1.5,<2" "httpx<1" "httpcore<2" "h11<1" \
    || { rm -rf "$OLDEST_DIR"; echo "NOTE: transformers 5.17 not installed in $OLDEST_DIR: tests/test_transformers_oldest.py will skip." >&2; }
fi

echo "setup done: $("$PY" -c 'import torch,transformers,peft,deepspeed; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "deepspeed", deepspeed.__version__)')"
