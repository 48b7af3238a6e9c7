#!/usr/bin/env bash
# The measurements of the book's "Measuring on a GPU" page, in one command:
#
#   1. our CIFAR-10 training step (ngf 128, batch 128: forward, backward, Adam) and annealed
#      Langevin throughput on the Vulkan device (examples/refinenet_step), then one more step and
#      forward pass with per-kernel device timing (--profile);
#   2. the same with the reference model in PyTorch, strict fp32 and with TF32
#      (benches/pytorch_refinenet.py, which needs a checkout of ermongroup/ncsn);
#   3. `--example cifar10` end to end on the Vulkan device: a short training run at the paper's
#      settings, then sampling, inpainting and the nearest-neighbour search;
#   4. with PLAIN=1 (the default), part 1 again, unprofiled, on the kernels that do not declare
#      SignedZeroInfNanPreserve (NCSN_VULKAN_KERNELS=plain): what keeping NaN costs the driver's
#      compiler. Last, as the least needed: a time limit stops it first.
#
# Usage, from the repository root:
#
#   cargo build --release --features vulkan --example refinenet_step --example cifar10
#   benches/gpu_measure.sh path/to/ermongroup/ncsn [LOG_DIR]
#
# Settings (environment variables, with their defaults):
#   BIN=target/release/examples   where the two example binaries are
#   DATA=../shared/data/cifar10   the CIFAR-10 binary batches
#   LOG_DIR (2nd argument)=gpu_measure_out, RUN_DIR=$LOG_DIR/cifar10-run
#   CONFIG=cifar10 BATCH=128 STEPS=5 LANGEVIN=10 TORCH_DEVICE=cuda   (CONFIG=mnist: the MNIST model)
#   E2E_PRESET=paper E2E_STEPS=100 E2E_ARGS="--n-steps-each 20"   (flags for the end-to-end run)
#   PLAIN=1   (0 leaves out part 4)
#   PART_TIMEOUT=240   seconds any one part may run: a part that hangs (our backend has yet to
#       meet a GPU) is stopped, and the parts after it, PyTorch's baseline among them, still run
#
# The end-to-end run's defaults are sized to finish inside a lease. In FLOP (19.79 GFLOP a
# CIFAR-10 forward pass per picture, a training step three passes of 128): the paper's settings
# with 300 steps would be 2.3 PFLOP of training, 1.27 of sampling (1,000 steps of 64 chains) and
# 0.95 of inpainting (48 chains), 4.5 PFLOP, some 450 s at 10 TFLOP/s; 100 steps and T = 20
# make it 1.2 PFLOP. The full 1,000-step sampler's rate is what the first part measures.
#
# Each part prints to the terminal and to LOG_DIR/<part>.txt, ending with the peak GPU memory in
# use during it where nvidia-smi exists. A part that fails is reported at the end and does not
# stop the others; the exit status is the number of parts that failed.
set -u

if [ $# -lt 1 ]; then
    sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
fi
NCSN=$1
LOG_DIR=${2:-gpu_measure_out}
BIN=${BIN:-target/release/examples}
DATA=${DATA:-../shared/data/cifar10}
RUN_DIR=${RUN_DIR:-$LOG_DIR/cifar10-run}
CONFIG=${CONFIG:-cifar10}
BATCH=${BATCH:-128}
STEPS=${STEPS:-5}
LANGEVIN=${LANGEVIN:-10}
TORCH_DEVICE=${TORCH_DEVICE:-cuda}
E2E_PRESET=${E2E_PRESET:-paper}
E2E_STEPS=${E2E_STEPS:-100}
E2E_ARGS=${E2E_ARGS---n-steps-each 20}
PLAIN=${PLAIN:-1}
PART_TIMEOUT=${PART_TIMEOUT:-240}
# Python's output goes through a pipe (tee): unbuffered, so a part stopped by a time limit still
# leaves what it printed.
export PYTHONUNBUFFERED=1
mkdir -p "$LOG_DIR"
failed=()

# Writes to $1, every half second, the most GPU memory in use so far (MiB, nvidia-smi's
# memory.used of the first GPU: every process's allocations, the CUDA or Vulkan context included).
sample_gpu_memory() {
    local peak=0 m
    while :; do
        m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n 1)
        m=${m//[^0-9]/}
        if [ -n "$m" ] && [ "$m" -gt "$peak" ]; then
            peak=$m
            echo "$peak" >"$1"
        fi
        sleep 0.5
    done
}

# Runs "$@" with its output to the terminal and to LOG_DIR/$part.txt, and notes a failure. With
# nvidia-smi present it also reports the part's peak GPU memory in use.
part() {
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS sampler="" mem="$LOG_DIR/$name.gpu_memory"
    if command -v nvidia-smi >/dev/null; then
        rm -f "$mem"
        sample_gpu_memory "$mem" &
        sampler=$!
    fi
    # --foreground keeps the part in this script's process group, so that a caller's timeout
    # (run.sh's BUDGET) that stops this script stops the part too.
    if [ "$(type -t "$1")" = function ]; then
        "$@"
    else
        timeout --foreground --kill-after=5 "$PART_TIMEOUT" "$@"
    fi 2>&1 | tee "$LOG_DIR/$name.txt"
    local status=${PIPESTATUS[0]}
    case $status in
        124 | 137) echo "== $name: stopped after PART_TIMEOUT=$PART_TIMEOUT s" |
            tee -a "$LOG_DIR/$name.txt" ;;
    esac
    if [ -n "$sampler" ]; then
        kill "$sampler" 2>/dev/null
        wait "$sampler" 2>/dev/null
        echo "== $name: peak GPU memory in use $(cat "$mem" 2>/dev/null || echo "?") MiB" \
            "(nvidia-smi, sampled every 0.5 s)" | tee -a "$LOG_DIR/$name.txt"
    fi
    echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$LOG_DIR/$name.txt"
    [ "$status" = 0 ] || failed+=("$name (exit $status)")
}

machine() {
    date -u '+%Y-%m-%d %H:%M:%S UTC'
    grep -m1 'model name' /proc/cpuinfo
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
        nvidia-smi -q -d CLOCK,PERFORMANCE 2>/dev/null | head -n 40
    fi
    if command -v vulkaninfo >/dev/null; then
        vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|driverName|apiVersion' || true
    fi
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true
}

part machine machine
part ours "$BIN/refinenet_step" "$BATCH" "$STEPS" --config "$CONFIG" --device vulkan \
    --langevin "$LANGEVIN" --profile
for tf32 in "" --tf32; do
    # shellcheck disable=SC2086 # $tf32 is empty or one flag
    part "torch${tf32:+_tf32}" python3 benches/pytorch_refinenet.py "$NCSN" --config "$CONFIG" \
        --device "$TORCH_DEVICE" --batch "$BATCH" --steps "$STEPS" --langevin "$LANGEVIN" $tf32
done
# shellcheck disable=SC2086 # E2E_ARGS is a list of flags
part cifar10 "$BIN/cifar10" --device vulkan --preset "$E2E_PRESET" --steps "$E2E_STEPS" \
    --data "$DATA" --out "$RUN_DIR" $E2E_ARGS
if [ "$PLAIN" = 1 ]; then
    part ours_plain env NCSN_VULKAN_KERNELS=plain "$BIN/refinenet_step" "$BATCH" "$STEPS" \
        --config "$CONFIG" --device vulkan --langevin "$LANGEVIN"
fi

if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}"
else
    echo "all parts ran; logs in $LOG_DIR"
fi
exit ${#failed[@]}
