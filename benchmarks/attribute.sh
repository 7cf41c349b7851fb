#!/bin/bash
# Attribute each rank's head-to-head step with py-spy (pip install py-spy), pipesim vs torch:
#   benchmarks/attribute.sh SCHEDULE RANKS [STEPS] [OUTDIR]
# Runs `benchmarks/run.py --only torch` for one case, records every rank for its whole life
# (native frames, idle samples, threads; 40 Hz), then splits the samples with pyspy_split.py.
set -euo pipefail
schedule=${1:?schedule}; ranks=${2:?ranks}; steps=${3:-10}; out=${4:-/tmp/pipesim-attribute}
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python}
spy=${PYSPY:-py-spy}
mkdir -p "$out"
"$py" "$here/run.py" --only torch --ranks "$ranks" --schedule "$schedule" --steps "$steps" \
    --no-single --out "$out/rows.jsonl" > "$out/run.txt" 2>&1 &
parent=$!
kids=""
for _ in $(seq 120); do
  kids=$(pgrep -P "$parent" | sort -n || true)
  [ "$(echo "$kids" | wc -w)" -ge "$ranks" ] && break
  sleep 0.5
done
i=0
for pid in $kids; do  # forked in rank order
  "$spy" record --pid "$pid" --rate 40 --format raw --native --idle --threads \
      -o "$out/rank$i.txt" > "$out/rank$i.log" 2>&1 &
  i=$((i + 1))
done
wait "$parent" || true
wait
files=()
for ((r = 0; r < i; r++)); do files+=("$out/rank$r.txt"); done
"$py" "$here/pyspy_split.py" "${files[@]}"
