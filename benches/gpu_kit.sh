#!/usr/bin/env bash
# Packs everything benches/gpu_measure.sh needs into one folder, for a GPU machine that has the
# NVIDIA driver and PyTorch but no Rust toolchain, no Vulkan loader and no network:
#
#   KIT/bin/       refinenet_step and cifar10, built here with the `vulkan` feature and stripped
#   KIT/tests/     the device test suites (tests/vulkan.rs, tests/vulkan_tensor.rs), stripped and
#                  gzipped, which run.sh runs on the GPU after the measurements
#   KIT/gl/        the Vulkan loader and the GL vendor-neutral (libglvnd) libraries the NVIDIA
#                  driver's Vulkan library may need (Debian .debs, amd64: the set the device
#                  tool's README reports working there), unpacked there with dpkg -x
#   KIT/data/      the CIFAR-10 binary batches
#   KIT/ncsn/      the reference model's two files from a checkout of ermongroup/ncsn
#                  (models/__init__.py, models/cond_refinenet_dilated.py), for pytorch_refinenet.py
#   KIT/run.sh     what to run there, from the repository root of a copy of this tree
#
# Usage, from the repository root, as root (apt-get downloads the loader):
#
#   benches/gpu_kit.sh path/to/ermongroup/ncsn [KIT]
#
# Settings (environment variables, with their defaults):
#   KIT (2nd argument)=.gpu   the folder to fill (git ignores .gpu/)
#   DATA=../shared/data/cifar10   the CIFAR-10 binary batches to pack
#   VK_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json   the NVIDIA driver's Vulkan
#       manifest on the GPU machine, used by run.sh if the loader finds no driver by itself
#
# The kit is about 48 MB. Rebuild it after every change to the code: the binaries are the code.
set -euo pipefail

if [ $# -lt 1 ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
fi
NCSN=$1
KIT=${2:-.gpu}
DATA=${DATA:-../shared/data/cifar10}
VK_ICD=${VK_ICD:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}

die() {
    echo "gpu_kit: $*" >&2
    exit 1
}

# Everything is checked before anything is written, so a failure leaves no half-filled kit.
[ -f Cargo.toml ] && [ -f benches/gpu_measure.sh ] || die "run from the repository root"
for f in models/__init__.py models/cond_refinenet_dilated.py; do
    [ -f "$NCSN/$f" ] || die "$NCSN/$f: missing (the argument is a checkout of ermongroup/ncsn)"
done
# An emptied copy would only fail on the GPU machine, as an ImportError in the
# PyTorch part, after the lease's minutes are spent.
model=$NCSN/models/cond_refinenet_dilated.py
grep -q '^class CondRefineNetDilated(nn.Module):' "$model" ||
    die "$model: defines no CondRefineNetDilated (empty, or not the reference file)"
if command -v python3 >/dev/null; then
    python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$model" ||
        die "$model: not valid Python"
fi
compgen -G "$DATA/data_batch_*.bin" >/dev/null || die "$DATA: no data_batch_*.bin (set DATA)"
command -v glslc >/dev/null || die "glslc not found: run .ci/vulkan-deps first"

echo "== building the vulkan examples"
cargo build --release --features vulkan --example refinenet_step --example cifar10
# The device test suites too: on the GPU they check every kernel against the CPU there, which
# lavapipe in CI cannot speak for (another compiler, another rounding of exp and division, and
# a driver that may assume no NaNs). Cargo names their executables in its JSON messages.
echo "== building the device test suites"
suites=$(cargo test --release --features vulkan --no-run --test vulkan --test vulkan_tensor \
    --message-format=json |
    sed -n 's/.*"name":"\([a-z_]*\)".*"executable":"\([^"]*\)".*/\1=\2/p')
[ "$(wc -l <<<"$suites")" = 2 ] || die "expected the executables of two test suites, got: $suites"

rm -rf "$KIT"
mkdir -p "$KIT/bin" "$KIT/gl" "$KIT/data" "$KIT/ncsn/models"
for b in refinenet_step cifar10; do
    strip -o "$KIT/bin/$b" "target/release/examples/$b"
done
# Compressed (14 MB of test code becomes 5), since the tree and the kit travel within 64 MiB.
mkdir -p "$KIT/tests"
while IFS='=' read -r name exe; do
    strip -o "$KIT/tests/$name" "$exe"
    gzip -9 "$KIT/tests/$name"
done <<<"$suites"
cp "$NCSN/models/__init__.py" "$NCSN/models/cond_refinenet_dilated.py" "$KIT/ncsn/models/"
cp -r "$DATA" "$KIT/data/cifar10"
chmod -R u+w "$KIT" # the data may come from a read-only folder

echo "== downloading the Vulkan loader and the GL dispatch libraries (amd64)"
lists=$(mktemp -d)
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists"
    -oAPT::Sandbox::User=root)
mkdir -p "$lists/partial"
apt-get "${apt_opts[@]}" update -qq
# libvulkan1 alone finds the driver's manifest, but the driver's library (libGLX_nvidia) may
# need libglvnd's libraries, which a headless image may lack.
(cd "$KIT/gl" && apt-get "${apt_opts[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 \
    libgl1 libglx0 libgles2)
rm -rf "$lists"

# What runs on the GPU machine. Each part of gpu_measure.sh logs to its own file, so whatever
# finished before a time limit is kept, and gpu_measure.sh runs under BUDGET seconds, so that the
# bundling after it still happens inside the caller's own limit. The device tool returns at most
# 8 files from $OUT, so the logs, the memory peaks and the run's pictures come back as two: every
# part's log in summary.txt, and all of it in gpu_measure.tar.gz.
cat >"$KIT/run.sh" <<EOF
#!/usr/bin/env bash
# Written by benches/gpu_kit.sh: the GPU comparison from this kit. Run from the repository root.
# BUDGET (default 400) bounds gpu_measure.sh, in seconds; its settings (E2E_STEPS, BATCH, ...)
# pass through the environment. It first checks that the Vulkan device's name contains
# EXPECT_DEVICE (default NVIDIA; llvmpipe to rehearse on lavapipe), and stops (exit 3) if not.
# After the measurements it runs the device test suites there, within TESTS_BUDGET seconds
# (default 120) for both: with the device check, about 540 s, inside a 600-second limit. With
# \$OUT set, the results are bundled there, and summary.txt is refreshed every 15 s while the
# parts run, so that a run cut off from outside still brings back what it had. The exit status is the
# number of parts of gpu_measure.sh that failed (124 if BUDGET stopped it) plus the number of
# test suites that failed or ran out of time.
set -u
KIT=$KIT
for f in "\$KIT"/gl/*.deb; do dpkg -x "\$f" /; done
ldconfig
if [ -f "$VK_ICD" ]; then export VK_DRIVER_FILES="$VK_ICD"; fi
chmod +x "\$KIT"/bin/*
# Seconds, not minutes: does the Vulkan device open, and is it the GPU? A loader that finds no
# driver, or finds only a CPU device, would otherwise show only after the PyTorch parts have spent
# their minutes. On failure, say why and stop, while the machine is still warm for another try.
probe=\$(timeout 120 "\$KIT/bin/refinenet_step" 1 1 --device vulkan 2>&1)
if ! grep -q "on vulkan(.*\${EXPECT_DEVICE:-NVIDIA}" <<<"\$probe"; then
    echo "run.sh: the Vulkan device is not the \${EXPECT_DEVICE:-NVIDIA} one; refinenet_step said:"
    echo "\$probe" | tail -n 20
    VK_LOADER_DEBUG=error,warn timeout 60 "\$KIT/bin/refinenet_step" 1 1 --device vulkan 2>&1 |
        tail -n 30
    ls -l /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1
    if [ -n "\${OUT:-}" ]; then
        { echo "\$probe"; ldconfig -p | grep -E 'vulkan|GLX|GLdispatch'; } >"\$OUT/summary.txt"
    fi
    exit 3
fi
echo "\$probe" | grep -m1 'on vulkan('
LOG=\${OUT:+/tmp/}gpu_measure_out
RUN=/tmp/ncsn-cifar10-run
# A fresh run directory: an old one would make the end-to-end run resume from its checkpoint.
rm -rf "\$LOG" "\$RUN"
mkdir -p "\$LOG"
# Every part's log so far, in the order the parts ran (each is written as its part goes), as
# \$OUT/summary.txt; copied whole, so that a reader never sees half of one.
summarise() {
    [ -n "\${OUT:-}" ] || return 0
    for f in \$(ls -rt "\$LOG"/*.txt 2>/dev/null); do
        printf '\n===== %s\n' "\${f##*/}"
        cat "\$f"
    done >/tmp/ncsn-summary.txt
    cp /tmp/ncsn-summary.txt "\$OUT/summary.txt.new" && mv "\$OUT/summary.txt.new" "\$OUT/summary.txt"
}
(while sleep 15; do summarise; done) &
refresher=\$!
BIN="\$KIT/bin" DATA="\$KIT/data/cifar10" RUN_DIR="\$RUN" \\
    timeout --kill-after=10 "\${BUDGET:-400}" bash benches/gpu_measure.sh "\$KIT/ncsn" "\$LOG"
status=\$?
[ "\$status" = 124 ] && echo "gpu_measure.sh stopped after BUDGET=\${BUDGET:-400} s"
mkdir -p "\$LOG/cifar10-run"
cp "\$RUN"/*.png "\$RUN"/*.json "\$RUN"/*.svg "\$LOG/cifar10-run/" 2>/dev/null
# The device test suites: every kernel against the CPU, on this GPU. After the measurements, so
# that a test that upsets the driver cannot cost them; each suite's log is one more part.
tests_end=\$((SECONDS + \${TESTS_BUDGET:-120}))
for gz in "\$KIT"/tests/*.gz; do
    suite=\${gz##*/}
    suite=\${suite%.gz}
    left=\$((tests_end - SECONDS))
    if [ "\$left" -le 0 ]; then
        echo "== tests_\$suite: not run, TESTS_BUDGET spent" | tee "\$LOG/tests_\$suite.txt"
        status=\$((status + 1))
        continue
    fi
    gunzip -c "\$gz" >"/tmp/ncsn-\$suite" && chmod +x "/tmp/ncsn-\$suite"
    echo "== tests_\$suite: /tmp/ncsn-\$suite (at most \$left s)"
    start=\$SECONDS
    (cd /tmp && timeout --kill-after=10 "\$left" "/tmp/ncsn-\$suite") 2>&1 |
        tee "\$LOG/tests_\$suite.txt"
    suite_status=\${PIPESTATUS[0]}
    echo "== tests_\$suite: exit \$suite_status after \$((SECONDS - start)) s" |
        tee -a "\$LOG/tests_\$suite.txt"
    [ "\$suite_status" = 0 ] || status=\$((status + 1))
done
kill "\$refresher" 2>/dev/null
wait "\$refresher" 2>/dev/null
if [ -n "\${OUT:-}" ]; then
    summarise
    tar czf "\$OUT/gpu_measure.tar.gz" -C "\${LOG%/*}" "\${LOG##*/}"
    echo "results: \$OUT/summary.txt and \$OUT/gpu_measure.tar.gz"
fi
exit \$status
EOF
chmod +x "$KIT/run.sh"

echo "== kit ready: $(du -sh "$KIT" | cut -f1) in $KIT"
echo "On the GPU machine, from the root of a copy of this tree: bash $KIT/run.sh"
echo "(gpu_measure.sh's settings, e.g. E2E_STEPS=200, pass through the environment)"
