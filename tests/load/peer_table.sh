#!/usr/bin/env bash
# The Benchmarks table in one command: genq (defaults and q4) and the peers, one run of each system one after
# another, on the light workloads, workload.py --n 96 and the long documents. One line per run: the row, then
# the system's JSON line. Needs the peers' environment (../shared/bench/setup-anchors.sh, in $ANCHORS_VENV);
# run from the repository root with the project's environment (make install-test), the machine otherwise idle.
# Usage: bash tests/load/peer_table.sh [--quick]   (--quick: the light workloads and n=96 only)
set -euo pipefail
anchors=${ANCHORS_VENV:-/tmp/genq-anchors}
kit=${BENCH_KIT:-../shared/bench}
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 "$kit/workload.py" --n 1 --min-new 128 --max-new 128 > "$work/w1.jsonl"
python3 "$kit/workload.py" --n 4 --min-new 128 --max-new 128 > "$work/w4.jsonl"
python3 "$kit/workload.py" --n 96 > "$work/w96.jsonl"
PYTHONPATH=. "$python" tests/load/long_documents.py --n 12 > "$work/long12.jsonl"

genq() { "$python" -m genq bench --workload "$work/$1.jsonl" "${@:2}" 2>/dev/null | tail -1; }
peer() { (. "$anchors/bin/activate" && python "$kit/anchors.py" "$1" --workload "$work/$2.jsonl" "${@:3}" 2>/dev/null \
          | tail -1); }

for w in w1:1 w4:4; do
  name=${w%%:*} slots=${w##*:}
  echo "$name genq-defaults $(genq "$name")"
  echo "$name genq-q4 $(genq "$name" -- --quantization q4)"
  echo "$name llama-server-np$slots $(peer llamacpp-server "$name" --parallel "$slots")"
done
echo "w96 genq-defaults $(genq w96)"
echo "w96 genq-service $(genq w96 --through-service)"
echo "w96 genq-q4 $(genq w96 -- --quantization q4)"
echo "w96 llama-server-np16 $(peer llamacpp-server w96 --parallel 16)"
echo "w96 transformers-cb-bf16 $(peer transformers-cb w96 --dtype bfloat16)"
if [ "${1:-}" != "--quick" ]; then
  echo "long12 genq-defaults $(genq long12)"
  echo "long12 genq-q4 $(genq long12 -- --quantization q4)"
  echo "long12 llama-server-np16 $(peer llamacpp-server long12 --parallel 16 --ctx-per-slot 8192)"
fi
