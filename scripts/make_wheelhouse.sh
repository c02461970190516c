#!/usr/bin/env bash
# Build a folder of wheels for an air-gapped machine: every requirement (and test requirement) of this project
# for a target Python and platform, torch included, DeepSpeed built into a wheel from its sdist. On the cluster:
#   bash scripts/setup.sh --offline DIR          (pip install --no-index --find-links DIR; no network)
#
# usage: bash scripts/make_wheelhouse.sh DIR [--python-version 3.11] [--platform manylinux_2_28_x86_64]
#            [--torch-wheel FILE | --torch-index URL] [--torch-version V] [--only "NAME ..."]
#
# examples:
#   bash scripts/make_wheelhouse.sh wheelhouse                                    # this machine's Python/platform
#   bash scripts/make_wheelhouse.sh wheelhouse --python-version 3.10 --platform manylinux2014_x86_64 \
#        --torch-index https://download.pytorch.org/whl/cu126                     # CUDA 12.6 cluster, glibc >= 2.17
#   bash scripts/make_wheelhouse.sh wheelhouse --torch-wheel ~/dl/torch-2.8.0+cu128-cp311-cp311-manylinux_2_28_x86_64.whl
#   bash scripts/make_wheelhouse.sh /tmp/wh --only "rouge-score pyyaml"          # a subset (the CI test)
#
# torch: by default `pip download torch==<the torch installed here>` through pip's configured indexes, for the target.
# From PyPI that is the CUDA build with its nvidia-* wheels (several GB); a CPU-only or other CUDA variant comes from
# PyTorch's index (--torch-index https://download.pytorch.org/whl/cpu | .../cu126 ...) or a wheel you downloaded
# (--torch-wheel). The torch wheel must match the cluster's CUDA driver, not this machine.
# DeepSpeed publishes only an sdist: it is built here with `pip wheel deepspeed==V --no-deps` (DS_BUILD_OPS=0: a
# pure-Python wheel whose ops JIT-compile on the cluster, which then needs a CUDA toolkit and ninja; the wheel of
# ninja is included). Any other requirement without a wheel for the target is built from its sdist the same way;
# a build that yields a platform-specific wheel for another platform stops the script.
# Writes DIR/*.whl, DIR/requirements.txt and DIR/constraints.txt (the exact torch), DIR/MANIFEST.txt (sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
die() { echo "make_wheelhouse: $*" >&2; exit 2; }

[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || { sed -n '2,13p' "$0" >&2; exit 2; }
OUT=$1; shift
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PLATFORMS=()
TORCH_WHEEL="" TORCH_INDEX="" TORCH_VERSION="" ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER=$2; shift 2 ;;
    --platform) PLATFORMS+=("$2"); shift 2 ;;
    --torch-wheel) TORCH_WHEEL=$2; shift 2 ;;
    --torch-index) TORCH_INDEX=$2; shift 2 ;;
    --torch-version) TORCH_VERSION=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ ${#PLATFORMS[@]} -gt 0 ] || PLATFORMS=("manylinux_2_28_$(uname -m)")
# pip takes --platform literally for manylinux_2_Y (it widens only manylinux2014/2010): a glibc-2.Y target also runs
# wheels tagged for any older glibc, so list them all (and the legacy aliases) or most wheels look missing.
widen() {
  local p=$1
  if [[ "$p" =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
    local y=${BASH_REMATCH[1]} arch=${BASH_REMATCH[2]} x
    for ((x = y; x >= 5; x--)); do echo "manylinux_2_${x}_$arch"; done
    [ "$y" -ge 17 ] && echo "manylinux2014_$arch"
    [ "$y" -ge 12 ] && echo "manylinux2010_$arch"
    echo "manylinux1_$arch"
  else
    echo "$p"
  fi
}
WIDE=()
for p in "${PLATFORMS[@]}"; do while read -r q; do WIDE+=("$q"); done < <(widen "$p"); done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
t0=$(date +%s)
target=(--python-version "$PYVER" --implementation cp --only-binary=:all:)
for p in "${WIDE[@]}"; do target+=(--platform "$p"); done
LOCAL_PLATFORM=$("$PY" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')

# 1. the requirement lines to fetch (all of requirements*.txt, or the --only names with their version ranges)
REQS=$OUT/requirements.txt
grep -hvE '^\s*(#|$)' requirements.txt requirements-test.txt > "$REQS.all"
if [ -n "$ONLY" ]; then
  : > "$REQS"
  for name in $ONLY; do
    [ "$name" = torch ] && continue
    grep -iE "^${name}([<>=!~ \[;]|$)" "$REQS.all" >> "$REQS" || die "--only $name: not in requirements.txt / requirements-test.txt"
  done
else
  cp "$REQS.all" "$REQS"
fi
rm -f "$REQS.all"
WANT_TORCH=1
if [ -n "$ONLY" ] && ! grep -qiE '^(deepspeed|peft|accelerate|bert-score|transformers)\b' "$REQS" \
   && ! [[ " $ONLY " == *" torch "* ]]; then
  WANT_TORCH=0  # a subset that does not need torch
fi

# 2. torch for the target; its exact version is pinned so the resolver never swaps it for another build
: > "$OUT/constraints.txt"
if [ "$WANT_TORCH" = 1 ]; then
  if [ -n "$TORCH_WHEEL" ]; then
    [ -f "$TORCH_WHEEL" ] || die "--torch-wheel $TORCH_WHEEL: file not found"
    cp "$TORCH_WHEEL" "$OUT/"
  else
    TORCH_VERSION=${TORCH_VERSION:-$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)}
    [ -n "$TORCH_VERSION" ] || die "no torch installed here: pass --torch-version V, --torch-index URL or --torch-wheel FILE"
    echo "== torch==$TORCH_VERSION for Python $PYVER ${PLATFORMS[*]}${TORCH_INDEX:+ from $TORCH_INDEX}"
    "$PY" -m pip download -q "${target[@]}" --no-deps -d "$OUT" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
      "torch==$TORCH_VERSION"
  fi
  TORCH_FILE=$(ls -t "$OUT"/torch-*.whl | head -1)
  TORCH_PIN=$(basename "$TORCH_FILE" | cut -d- -f2)
  echo "torch==$TORCH_PIN" > "$OUT/constraints.txt"
  echo "   $(basename "$TORCH_FILE")"
fi

# 3. wheels built from sdists: DeepSpeed always (it publishes no wheel), others when the download below asks
build_sdist() {  # $1: requirement (e.g. "deepspeed==0.19.8" or "rouge-score>=0.1.2")
  echo "== building a wheel from the sdist of $1"
  local extra=()
  # DeepSpeed's setup.py imports torch: build against the torch installed here, with no ops compiled in
  case "$1" in deepspeed*) extra=(--no-build-isolation) ;; esac
  local before after
  before=$(ls "$OUT")
  local name
  name=$(echo "$1" | sed -E 's/[<>=!~ ;[].*//')
  DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-binary "$name" "${extra[@]}" -w "$OUT" "$1"
  after=$(comm -13 <(echo "$before") <(ls "$OUT") | grep '\.whl$' || true)
  for w in $after; do
    case "$w" in
      *-none-any.whl) ;;
      *) [[ "$w" == *"$LOCAL_PLATFORM"* && "$PYVER" == "$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" ]] \
           || die "$w was built for this machine, not for Python $PYVER ${PLATFORMS[*]}: build it on a machine like the target" ;;
    esac
    echo "   $w"
  done
}
if grep -qiE '^deepspeed\b' "$REQS"; then
  DS_SPEC=$(grep -iE '^deepspeed\b' "$REQS" | head -1)
  DS_VERSION=${DEEPSPEED_VERSION:-$("$PY" -c 'import importlib.metadata as m; print(m.version("deepspeed"))' 2>/dev/null || true)}
  if [ -n "$DS_VERSION" ]; then build_sdist "deepspeed==$DS_VERSION"; else build_sdist "$DS_SPEC"; fi
fi

# 4. everything else as wheels for the target, resolving torch/deepspeed/built wheels from DIR
echo "== downloading wheels for Python $PYVER ${PLATFORMS[*]}"
LOG=$(mktemp)
for attempt in $(seq 1 20); do
  if "$PY" -m pip download -q "${target[@]}" -d "$OUT" --find-links "$OUT" -c "$OUT/constraints.txt" -r "$REQS" \
       2> "$LOG"; then
    break
  fi
  missing=$(grep -oE 'No matching distribution found for [^ ]+' "$LOG" | head -1 | awk '{print $NF}')
  if [ -z "$missing" ] || [ "$attempt" = 20 ]; then cat "$LOG" >&2; rm -f "$LOG"; die "pip download failed"; fi
  build_sdist "$missing"  # no wheel for the target: build one from its sdist (pure-Python ones are portable)
done
rm -f "$LOG"

(cd "$OUT" && ls -l *.whl | awk '{printf "%10d  %s\n", $5, $9}') > "$OUT/MANIFEST.txt"
n=$(ls "$OUT"/*.whl | wc -l)
echo "wheelhouse: $OUT  ($n wheels, $(du -sh "$OUT" | cut -f1), $(( $(date +%s) - t0 )) s)"
echo "install on the target (no network):  bash scripts/setup.sh --offline $OUT"
