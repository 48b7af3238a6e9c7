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
#                  (benches/gpu_run.sh; with the device tool, carry [".gpu"]: git ignores it)
#
# Usage, from the repository root, as root (apt-get downloads the loader):
#
#   benches/gpu_kit.sh path/to/ermongroup/ncsn [KIT]
#
# Settings (environment variables, with their defaults):
#   KIT (2nd argument)=.gpu   the folder to fill (git ignores .gpu/)
#   DATA=../shared/data/cifar10   the CIFAR-10 binary batches to pack
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

# What runs on the GPU machine: benches/gpu_run.sh (the device check, gpu_measure.sh within a
# budget, the test suites, and the results bundled into $OUT as summary.txt, refreshed as the
# parts go, and gpu_measure.tar.gz: the device tool returns at most 8 files).
cp benches/gpu_run.sh "$KIT/run.sh"
chmod +x "$KIT/run.sh"

# The device tool carries the tree and the kit within 64 MiB: refuse a kit that would not fit
# (a data folder holding all of CIFAR-10, say) here, not there.
tree_kib=$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -n 1 | cut -f1)
kit_kib=$(du -sk "$KIT" | cut -f1)
[ $((tree_kib + kit_kib)) -le $((60 * 1024)) ] ||
    die "the tree (${tree_kib} KiB) and the kit (${kit_kib} KiB) exceed 60 MiB; pack less data (DATA)"

echo "== kit ready: $(du -sh "$KIT" | cut -f1) in $KIT"
echo "On the GPU machine, from the root of a copy of this tree: bash $KIT/run.sh"
echo "(with the device tool: run(command=\"bash $KIT/run.sh\", carry=[\"$KIT\"], timeout_s=600))"
echo "(gpu_measure.sh's settings, e.g. E2E_STEPS=200, pass through the environment)"
