#!/usr/bin/env bash
# Run one benchmark for an earlier commit and for the working tree, alternately, in the same
# minutes: on a machine whose speed drifts, only such pairs compare. Each side runs its own copy
# of the benchmark script against its own packages (PYTHONPATH); JSON goes to $OUT (default
# /tmp/inferwatch-ab), and benchmarks/ab_summary.py prints the tables.
#
#   benchmarks/ab.sh 8a00729 ingest       # also: middleware, proxy, evaluation
#   ROUNDS=3 OUT=/tmp/ab benchmarks/ab.sh 8a00729 proxy
#   python benchmarks/ab_summary.py /tmp/inferwatch-ab proxy
set -euo pipefail

before_ref=${1:?usage: ab.sh COMMIT ingest|middleware|proxy|evaluation}
kind=${2:?usage: ab.sh COMMIT ingest|middleware|proxy|evaluation}
rounds=${ROUNDS:-3}
out=${OUT:-/tmp/inferwatch-ab}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
before=/tmp/inferwatch-before-$before_ref

mkdir -p "$out"
if [ ! -d "$before" ]; then
    git -C "$here" worktree add -f "$before" "$before_ref" >/dev/null
fi

case $kind in
    ingest) args=(benchmarks/ingest.py --rows 100000 --repeats 1) ;;
    middleware) args=(benchmarks/middleware_overhead.py --rounds 1 --in-process 0
                      --variants bare,monitor-1.0,monitor-0.1,monitor-0.0) ;;
    proxy) args=(benchmarks/proxy_overhead.py --rounds 1 --variants sidecar-1.0,sidecar-0.1,nginx) ;;
    evaluation) args=(benchmarks/evaluation.py --scenarios "binary with probability" --repeat 3) ;;
    *) echo "unknown benchmark $kind" >&2; exit 2 ;;
esac

for round in $(seq 1 "$rounds"); do
    for side in before after; do
        dir=$here
        [ "$side" = before ] && dir=$before
        json=(--json "$out/$kind-$side-$round.json")
        [ "$kind" = evaluation ] && json=()  # it prints its report; the log keeps it
        (cd "$dir" && PYTHONPATH=$dir "$python" "${args[@]}" "${json[@]}" \
            >"$out/$kind-$side-$round.log" 2>&1)
        echo "$kind $side round $round done at $(date +%T)"
    done
done
