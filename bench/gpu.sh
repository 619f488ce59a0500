#!/usr/bin/env bash
# Every GPU benchmark in one go, in under 8 minutes, on a bare machine with python3, torch,
# torchvision, numpy and scikit-learn (no install: hybridlt/__init__.py maps the source folders).
# Results: bench/results/<bench>_<gpu>.md (e.g. step_h200_full.md). Each benchmark has its own time
# limit, so one that hangs or runs long cannot take the others' time; its log is in $LOGS.
#
#   bash bench/gpu.sh            # from the repository root
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
# the model in the device name: "NVIDIA H200" -> h200, "NVIDIA H100 80GB HBM3" -> h100, "NVIDIA A10G" -> a10g
GPU=$($PY -c 'import re, torch; n = torch.cuda.get_device_name(0)
m = re.search(r"\b([A-Z]{1,3}\d{2,4}[A-Za-z]?)\b", n.replace("NVIDIA", ""))
print((m.group(1) if m else re.sub(r"\W+", "", n)).lower())' 2>/dev/null)
if [ -z "$GPU" ]; then
    echo "bench/gpu.sh: no CUDA device visible to torch" >&2
    exit 1
fi
export HYBRIDLT_BENCH_TAG=$GPU
LOGS=${LOGS:-bench/results/logs_$GPU}
mkdir -p "$LOGS"
echo "GPU: $($PY -c 'import torch; print(torch.cuda.get_device_name(0), torch.__version__)'), tag $GPU"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

status=0
run() {  # run SECONDS NAME ARGS...: one benchmark under its own limit
    local limit=$1 name=$2
    shift 2
    local start=$SECONDS
    (cd bench && timeout --kill-after=10 "$limit" "$PY" "$@") >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "$name: rc $rc in $((SECONDS - start)) s (limit $limit s; log $LOGS/$name.log)"
    [ $rc -eq 0 ] || status=1
}

# budget: 40 + 60 + 150 + 70 + 80 + 60 + 30 = 490 s, under 8 minutes with the start-up
run 40  augment        augment.py --device cuda --images 65536 --batch 1024 --workers 8
run 60  step_reduced   step.py --device cuda --steps 50 --workers 8
run 150 step_full      step.py --device cuda --full --steps 50 --workers 12
run 70  fused_trials   fused_trials.py --device cuda --full --counts 1 2 4 8 --steps 20
run 80  trials_per_gpu trials_per_gpu.py --device cuda --counts 1 2 4 8 --epochs 2
run 60  losses         losses.py --device cuda --max-batch 4096 --repeats 3
run 30  eval_diag      eval_diagnostics.py --device cuda
echo "results:"; ls -1 bench/results/*_"$GPU"*.md 2>/dev/null
exit $status
