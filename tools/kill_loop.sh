#!/usr/bin/env bash
# Kill `retrain fit` with SIGKILL at random moments, resume after each kill, and check that the
# finished run has exactly the metrics and the saved model of an uninterrupted run with the same
# seed, and that no kill ever left a half-written weights file.
#
#   tools/kill_loop.sh DATA KILLS MAX_DELAY_S -- FIT_ARGS...
#   tools/kill_loop.sh ../shared/data/hymenoptera 20 12 -- --base efficientnet_lite0 \
#       --weights ../shared/weights/efficientnet-lite0-57934424.pth --epochs 4 --no-cache
#
# Works in $KILL_LOOP_DIR (default: a new temporary directory). Exit 0 when everything matches.
set -euo pipefail

data=${1:?usage: tools/kill_loop.sh DATA KILLS MAX_DELAY_S -- FIT_ARGS...}
kills=${2:?kills}
max_delay=${3:?max delay in seconds}
shift 3
[[ ${1:-} == "--" ]] && shift
retrain=${RETRAIN:-target/release/retrain}
[[ -x $retrain ]] || cargo build --release --bin retrain
work=${KILL_LOOP_DIR:-$(mktemp -d)}
mkdir -p "$work"
echo "kill loop in $work"

metrics() { # history.csv without the wall-time column
    cut -d, -f1-6 "$1/history.csv"
}

check_weights() { # every weights file present must be complete
    local f
    for f in "$1"/*.safetensors "$1"/checkpoint*/*.safetensors; do
        [[ -e $f ]] || continue
        python3 - "$f" <<'PY'
import json, os, struct, sys
path = sys.argv[1]
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
if os.path.getsize(path) != 8 + n + end:
    sys.exit(f"half-written weights file: {path}")
PY
    done
}

echo "uninterrupted reference run"
"$retrain" fit "$data" "$@" --out "$work/reference" >"$work/reference.log" 2>&1

run="$work/killed"
start() { # exec, so that the background job's pid is retrain's own
    if [[ -f $run/state.json ]]; then
        exec "$retrain" fit "$data" --resume --out "$run"
    else
        exec "$retrain" fit "$data" "$@" --out "$run"
    fi
}
for ((i = 1; i <= kills; i++)); do
    (start "$@") >>"$work/killed.log" 2>&1 &
    pid=$!
    delay=$(python3 -c "import random; print(round(random.uniform(0.5, $max_delay), 2))")
    sleep "$delay"
    if kill -9 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        done_epochs=$(python3 -c "import json,sys; print(json.load(open('$run/state.json'))['epochs_done'])" 2>/dev/null || echo 0)
        echo "kill $i after ${delay}s: $done_epochs epoch(s) done"
    else
        wait "$pid" || true
        echo "kill $i: the run had already finished"
    fi
    check_weights "$run"
done
echo "final resume"
(start "$@") >>"$work/killed.log" 2>&1
check_weights "$run"
if diff <(metrics "$work/reference") <(metrics "$run") &&
    cmp "$work/reference/model.safetensors" "$run/model.safetensors" &&
    [[ ! -e $run/best.safetensors ]]; then
    echo "OK: after $kills kills the resumed run matches the uninterrupted one (history and model):"
    metrics "$run"
else
    echo "MISMATCH between the uninterrupted and the killed-and-resumed run" >&2
    exit 1
fi
