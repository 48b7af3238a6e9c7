#!/usr/bin/env bash
# The GPU comparison from a kit that benches/gpu_kit.sh packed (it copies this file into the kit
# as run.sh). Run `bash .gpu/run.sh` from the repository root of a copy of the tree (with the
# device tool: carry [".gpu"], or the kit, which git ignores, does not travel).
#
# It first checks that the Vulkan device's name contains EXPECT_DEVICE (default NVIDIA; llvmpipe
# to rehearse on lavapipe), and stops with exit status 3 if not. Then gpu_measure.sh runs its
# parts (settings such as E2E_STEPS, BATCH, PART_TIMEOUT pass through the environment) within
# BUDGET seconds (default 400), and the device test suites within TESTS_BUDGET (default 120).
# Everything ends by DEADLINE seconds after the start (default 570, inside a 600-second limit):
# the budgets shrink to fit what the device check left. With $OUT set, the results are bundled
# there, and summary.txt is refreshed every 15 s while the parts run, so that a run cut off from
# outside still brings back what it had. The exit status is 0 when everything ran and passed,
# 3 when the device check failed, and otherwise 10 plus the number of parts and suites that
# failed or were stopped (never 124 or 137, which a caller would read as its own time limit).
set -u
KIT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEADLINE=${DEADLINE:-570}
for f in "$KIT"/gl/*.deb; do dpkg -x "$f" /; done
ldconfig
# The NVIDIA driver's Vulkan manifest where the device tool's machines have it, given to the
# loader (which may not look there by itself); if the check then fails, it is tried without.
VK_ICD=${VK_ICD:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
if [ -f "$VK_ICD" ]; then export VK_DRIVER_FILES="$VK_ICD"; fi
chmod +x "$KIT"/bin/*
# Seconds, not minutes: does the Vulkan device open, and is it the GPU? A loader that finds no
# driver, or finds only a CPU device, would otherwise show only after the PyTorch parts have spent
# their minutes. On failure, say why and stop, while the machine is still warm for another try.
check() {
    probe=$(timeout 120 "$KIT/bin/refinenet_step" 1 1 --device vulkan 2>&1)
    check_status=$?
    grep -q "on vulkan(.*${EXPECT_DEVICE:-NVIDIA}" <<<"$probe" && [ "$check_status" = 0 ]
}
if ! check && [ -n "${VK_DRIVER_FILES:-}" ]; then
    # A stale manifest at VK_ICD would hide a working one where the loader looks by itself.
    echo "run.sh: the check failed with VK_DRIVER_FILES=$VK_DRIVER_FILES; once more without it"
    first_probe=$probe
    unset VK_DRIVER_FILES
    check || { probe="$first_probe
--- without VK_DRIVER_FILES:
$probe"; false; }
fi
if [ -z "${probe:-}" ] || ! grep -q "on vulkan(.*${EXPECT_DEVICE:-NVIDIA}" <<<"$probe" ||
    [ "$check_status" != 0 ]; then
    echo "run.sh: the Vulkan device check failed (exit $check_status); refinenet_step said:"
    echo "$probe" | tail -n 30
    if [ "$check_status" != 124 ]; then
        VK_LOADER_DEBUG=error,warn timeout 60 "$KIT/bin/refinenet_step" 1 1 --device vulkan 2>&1 |
            tail -n 30
    fi
    ls -l /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1
    find /usr /etc -name '*nvidia*icd*.json' 2>/dev/null | head
    if [ -n "${OUT:-}" ]; then
        { echo "check: exit $check_status"; echo "$probe"; ldconfig -p |
            grep -E 'vulkan|GLX|GLdispatch'; } >"$OUT/summary.txt"
    fi
    exit 3
fi
LOG=${OUT:+/tmp/}gpu_measure_out
RUN=/tmp/ncsn-cifar10-run
# A fresh run directory: an old one would make the end-to-end run resume from its checkpoint.
rm -rf "$LOG" "$RUN"
mkdir -p "$LOG"
# run.txt: this script's own account (the device, the budgets, what stopped), first in summary.txt.
note() { echo "$*" | tee -a "$LOG/run.txt"; }
note "$(echo "$probe" | grep -m1 'on vulkan(')"
note "$(echo "$probe" | grep -m1 '^kernels:')"
# Every part's log so far, in the order the parts ran (each is written as its part goes), as
# $OUT/summary.txt; copied whole, so that a reader never sees half of one.
summarise() {
    [ -n "${OUT:-}" ] || return 0
    for f in "$LOG/run.txt" $(ls -rt "$LOG"/*.txt 2>/dev/null | grep -v '/run\.txt$'); do
        printf '\n===== %s\n' "${f##*/}"
        cat "$f"
    done >/tmp/ncsn-summary.txt
    cp /tmp/ncsn-summary.txt "$OUT/summary.txt.new" && mv "$OUT/summary.txt.new" "$OUT/summary.txt"
}
# Its output goes nowhere, so that its sleep cannot hold the caller's pipe open.
(while sleep 15; do summarise; done) >/dev/null 2>&1 &
refresher=$!
tests_budget=${TESTS_BUDGET:-120}
budget=${BUDGET:-400}
fits=$((DEADLINE - SECONDS - tests_budget - 25))
[ "$budget" -gt "$fits" ] && budget=$fits
note "after the device check ($SECONDS s): BUDGET $budget s, TESTS_BUDGET $tests_budget s, DEADLINE $DEADLINE s"
failures=0
BIN="$KIT/bin" DATA="$KIT/data/cifar10" RUN_DIR="$RUN" PYTHONUNBUFFERED=1 \
    timeout --kill-after=10 "$budget" bash benches/gpu_measure.sh "$KIT/ncsn" "$LOG"
status=$?
case $status in
    0) note "gpu_measure.sh: every part ran" ;;
    124 | 137) note "gpu_measure.sh: stopped by BUDGET after $budget s"; failures=$((failures + 1)) ;;
    *) note "gpu_measure.sh: $status part(s) failed"; failures=$((failures + status)) ;;
esac
mkdir -p "$LOG/cifar10-run"
cp "$RUN"/*.png "$RUN"/*.json "$RUN"/*.svg "$LOG/cifar10-run/" 2>/dev/null
# The device test suites: every kernel against the CPU, on this GPU. After the measurements, so
# that a test that upsets the driver cannot cost them; each suite's log is one more part.
tests_end=$((SECONDS + tests_budget))
[ "$tests_end" -gt $((DEADLINE - 15)) ] && tests_end=$((DEADLINE - 15))
for gz in "$KIT"/tests/*.gz; do
    suite=${gz##*/}
    suite=${suite%.gz}
    left=$((tests_end - SECONDS))
    if [ "$left" -le 0 ]; then
        echo "== tests_$suite: not run, TESTS_BUDGET spent" | tee "$LOG/tests_$suite.txt"
        failures=$((failures + 1))
        continue
    fi
    gunzip -c "$gz" >"/tmp/ncsn-$suite" && chmod +x "/tmp/ncsn-$suite"
    echo "== tests_$suite: /tmp/ncsn-$suite (at most $left s)"
    start=$SECONDS
    (cd /tmp && timeout --kill-after=10 "$left" "/tmp/ncsn-$suite") 2>&1 |
        tee "$LOG/tests_$suite.txt"
    suite_status=${PIPESTATUS[0]}
    echo "== tests_$suite: exit $suite_status after $((SECONDS - start)) s" |
        tee -a "$LOG/tests_$suite.txt"
    [ "$suite_status" = 0 ] || failures=$((failures + 1))
done
code=0
[ "$failures" -gt 0 ] && code=$((10 + failures))
note "run.sh: $failures failure(s), exit $code, after $SECONDS s"
kill "$refresher" 2>/dev/null
wait "$refresher" 2>/dev/null
if [ -n "${OUT:-}" ]; then
    summarise
    tar czf "$OUT/gpu_measure.tar.gz" -C "${LOG%/*}" "${LOG##*/}"
    echo "results: $OUT/summary.txt and $OUT/gpu_measure.tar.gz"
fi
exit $code
