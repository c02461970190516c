#!/usr/bin/env bash
# Wheels for the Unsloth peers of bench/train_throughput.py (GPU image: Python 3.12, torch 2.11 CUDA 13,
# transformers 5.17, peft 0.21, no internet), into .whl_unsloth/ (carried beside .whl/, < 64 MiB per device call).
#   bash scripts/unsloth_wheels.sh       then on the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_unsloth .whl_unsloth/*.whl
# unsloth 2026.10.9 is the newest allowing transformers <= 5.17 and trl <= 1.15; trl 1.15.0 is the newest it allows;
# datasets 4.8.5 (< 5, as unsloth asks; dill and multiprocess with it) so the set runs without .whl/ too.
# Shrunk (still valid wheels, RECORD rewritten): bitsandbytes keeps its CUDA 13.0 and CPU libraries (Unsloth imports
# it even for 16-bit LoRA; bitsandbytes loads the 13.0 build on any CUDA 13.x); unsloth drops studio/ (its web UI,
# never imported by the unsloth package).
set -euo pipefail
cd "$(dirname "$0")/.."
D=.whl_unsloth
mkdir -p "$D"
for spec in unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 \
            bitsandbytes==0.50.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$D" "$spec" 2>&1 | grep -v "is ignored" || true
done
python3 - "$D" <<'PY'
import base64, hashlib, re, sys, zipfile
from pathlib import Path

def shrink(whl: Path, drop) -> None:
    """Rewrite `whl` without the members `drop` selects; RECORD lists what stays, with fresh hashes."""
    with zipfile.ZipFile(whl) as z:
        keep = [i for i in z.infolist() if not drop(i.filename)]
        if len(keep) == len(z.infolist()):
            return  # already shrunk
        data = {i.filename: z.read(i) for i in keep}
    record = next(n for n in data if n.endswith(".dist-info/RECORD"))
    lines = []
    for name, blob in data.items():
        if name != record:
            digest = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
            lines.append(f"{name},sha256={digest},{len(blob)}")
    data[record] = ("\n".join(lines + [f"{record},,"]) + "\n").encode()
    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for i in keep:
            z.writestr(i, data[i.filename], compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(whl)

d = Path(sys.argv[1])
for whl in d.glob("bitsandbytes-*.whl"):
    shrink(whl, lambda n: n.endswith(".so") and not re.search(r"libbitsandbytes_(cuda130|cpu)\.so$", n))
for whl in d.glob("unsloth-*.whl"):
    shrink(whl, lambda n: n.startswith("studio/"))
PY
ls -l "$D"/*.whl | awk '{s += $5; printf "%10d  %s\n", $5, $9} END {printf "%10d  total (%.1f MiB)\n", s, s / 2^20}'
