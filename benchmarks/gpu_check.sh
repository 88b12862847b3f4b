#!/usr/bin/env bash
# A short check of caching, training and scoring on one CUDA GPU (not run by tests).
#
# Run from the repository root on a machine with one CUDA GPU and xenofeat's dependencies importable by $PYTHON
# (default python3); no network: the embedded default model (MiniLM) and corpus. Stages, each with its wall time
# (process start included) and tokens/s:
#   1. cache ~200k tokens with --device cuda; a CPU cache of the first 16k tokens; their max abs difference
#   2. train 2 seeds (1M tokens each, TopK 3,072 latents) with --device cuda
#   3. score seed 0 against seed 1 with --device cuda (100k tokens)
#   4. the same three stages under `torchrun --standalone --nproc-per-node 1`, and their results against 1-3
#      (0 means the GPU run repeated bit for bit)
# Output goes to stdout and, when $OUT is set, to $OUT/gpu_check.txt. Expected to take 3-4 minutes on one H200.
# DEVICE, TOKENS, TRAIN_TOKENS, SCORE_TOKENS, WORKERS override the defaults (a smoke test of the script on a CPU, say).
set -euo pipefail

PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xenofeat-gpu.XXXXXX")
DEVICE=${DEVICE:-cuda}
TOKENS=${TOKENS:-200000}
TRAIN_TOKENS=${TRAIN_TOKENS:-1000000}
SCORE_TOKENS=${SCORE_TOKENS:-100000}
WORKERS=${WORKERS:-8}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

xf() { "$PY" -m features.cli "$@"; }
xf_torchrun() { "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m features.cli "$@"; }

# stage NAME TOKENS CMD...: run CMD, print its wall time and tokens/s
stage() {
    local name=$1 tok=$2 t0 t1
    shift 2
    t0=$(date +%s.%N)
    "$@" >"$WORK/$name.log" 2>&1 || { echo "FAILED: $name"; tail -30 "$WORK/$name.log"; exit 1; }
    t1=$(date +%s.%N)
    "$PY" -c "import sys; w = float(sys.argv[2]) - float(sys.argv[1]); t = int(sys.argv[3]);
print(f'{sys.argv[4]:<22} {w:8.1f} s  {t / w:12,.0f} tok/s  ({t:,} tokens)')" "$t0" "$t1" "$tok" "$name"
}

compare_caches() {  # max abs difference of the activations of two caches over their common first sequences
    "$PY" - "$1" "$2" "$3" <<'EOF'
import sys
import numpy as np
from activations.cache import ActivationCache
with ActivationCache.open(sys.argv[1]) as a, ActivationCache.open(sys.argv[2]) as b:
    n = min(a.n_seq, b.n_seq)
    # the same sequences, but for the last of the shorter cache, which its --max-tokens cap may cut short
    same = (a.tokens[:n] == b.tokens[:n]).all(1) & (a.mask[:n] == b.mask[:n]).all(1)
    assert same[: n - 1].all(), f"the caches hold other sequences from {np.flatnonzero(~same)[0]} on"
    n = n if same[-1] else n - 1
    hook = a.check_hook(None)
    keep = ~a.mask[:n]
    x = a.read_acts(hook, 0, n)[keep].astype(np.float32)
    y = b.read_acts(hook, 0, n)[keep].astype(np.float32)
    d = float(np.abs(x - y).max())
    print(f"{sys.argv[3]:<34} max |diff| {d:.3g} over {keep.sum():,} tokens (max |x| {np.abs(y).max():.3g})")
EOF
}

compare_runs() {  # max abs difference of the saved decoders of two runs, per seed
    "$PY" - "$1" "$2" "$3" <<'EOF'
import sys
import numpy as np
from safetensors.numpy import load_file
for seed in (0, 1):
    a, b = (load_file(f"{r}/seed-{seed}/sae_weights.safetensors") for r in sys.argv[1:3])
    d = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    print(f"{sys.argv[3]} seed {seed}: max |diff| of the saved weights {d:.3g}")
EOF
}

train_rate() {  # the training loop's own rate (metrics.jsonl), without process start and the final metrics
    "$PY" -c "import json, sys; ln = open(sys.argv[1] + '/metrics.jsonl').read().splitlines()[-1];
print(f'{sys.argv[2]:<22} loop {json.loads(ln)[\"tokens_per_s\"]:,.0f} tok/s (all members); run.json device:',
json.load(open(sys.argv[1] + '/run.json'))['device'])" "$1" "$2"
}

main() {
    echo "xenofeat GPU check in $WORK ($(date -u +%FT%TZ))"
    "$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU VISIBLE')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    local train=(--seeds 0,1 --tokens "$TRAIN_TOKENS" --no-progress --device "$DEVICE")
    local score=(--max-tokens "$SCORE_TOKENS" --workers "$WORKERS" --quiet --device "$DEVICE")
    for mode in plain torchrun; do
        local run=xf d="$WORK/$mode"
        [ "$mode" = torchrun ] && run=xf_torchrun
        mkdir -p "$d"
        echo "--- $mode"
        stage "$mode-cache-$DEVICE" "$TOKENS" $run cache --max-tokens "$TOKENS" --batch-size 64 --device "$DEVICE" \
            --out "$d/cache.h5"
        stage "$mode-train-$DEVICE" $((2 * TRAIN_TOKENS)) $run train --cache "$d/cache.h5" --out "$d/run" "${train[@]}"
        train_rate "$d/run" "$mode-train-$DEVICE"
        stage "$mode-score-$DEVICE" "$SCORE_TOKENS" $run score "$d/run" "${score[@]}"
    done
    echo "--- CPU reference and comparisons"
    stage cpu-cache-16k 16384 xf cache --max-tokens 16384 --batch-size 64 --device cpu --out "$WORK/cpu.h5"
    compare_caches "$WORK/plain/cache.h5" "$WORK/cpu.h5" "cache $DEVICE vs cpu (first 16k tokens)"
    compare_caches "$WORK/torchrun/cache.h5" "$WORK/plain/cache.h5" "cache torchrun vs plain"
    compare_runs "$WORK/torchrun/run" "$WORK/plain/run" "train torchrun vs plain"
    "$PY" -c "import json, sys; s = [json.load(open(f'{d}/run/features/summary.json')) for d in sys.argv[1:]];
print('score (plain, torchrun): well-defined', [x['well_defined'] for x in s], 'flagged', [x['flagged'] for x in s],
'EV', [round(x['sae']['explained_variance'], 4) for x in s])" \
        "$WORK/plain" "$WORK/torchrun"
    echo "done; work folder $WORK"
}

if [ -n "${OUT:-}" ]; then
    main 2>&1 | tee "$OUT/gpu_check.txt"
else
    main
fi
