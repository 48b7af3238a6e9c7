"""Times the reference NCSN model in PyTorch, for comparison with `cargo bench --bench refinenet`
and `cargo run --release --example refinenet_step`.

Usage:
    python3 benches/pytorch_refinenet.py /path/to/ermongroup/ncsn [--batch 128] [--steps 5]
        [--config mnist|cifar10] [--device cpu|cuda] [--tf32] [--langevin T]

Builds the reference CondRefineNetDilated from a checkout of ermongroup/ncsn — the MNIST config
(1×28×28, ngf 64) or the CIFAR-10 one (3×32×32, ngf 128), 10 noise levels — and times what
refinenet_step times:
  * one annealed-DSM training step (forward, backward, Adam with lr 1e-3) at the given batch,
    its labels and noise drawn before the clock starts (as refinenet_step draws them);
  * one forward pass under torch.no_grad() (what annealed Langevin sampling runs);
  * with --langevin T, annealed Langevin dynamics (the reference's anneal_Langevin_dynamics,
    without its copy of every step's images to the host) with T steps at each of the 10 levels
    on `batch` chains, reported as images per second for the paper's full 10 × 100 steps.
Prints the mean and best time of each and the effective GFLOP/s: the convolutions' multiply-adds
are counted with forward hooks on one forward pass (×2 for FLOPs; ×3 for a training step,
forward + backward), and the process's peak resident memory.

On a GPU (--device cuda) the timings synchronise the device; --tf32 lets matrix products and
convolutions use TF32 (PyTorch's default for cuDNN convolutions is on, for matmul off; this
script sets both to the flag, so the default run is strict fp32).

Not run by CI; needs `pip install torch`. The thread count is PyTorch's default (all cores); set
OMP_NUM_THREADS / --threads to pin it.
"""
import argparse
import math
import resource
import sys
import time
import types

import torch

p = argparse.ArgumentParser()
p.add_argument('ncsn', help='path to a checkout of ermongroup/ncsn')
p.add_argument('--batch', type=int, default=128)
p.add_argument('--steps', type=int, default=5)
p.add_argument('--threads', type=int, default=0)
p.add_argument('--config', choices=['mnist', 'cifar10'], default='mnist')
p.add_argument('--device', default='cpu')
p.add_argument('--tf32', action='store_true', help='allow TF32 in matmul and cuDNN convolutions')
p.add_argument('--langevin', type=int, default=0, help='also time annealed Langevin, T steps per level')
args = p.parse_args()
sys.path.insert(0, args.ncsn)
from models.cond_refinenet_dilated import CondRefineNetDilated  # noqa: E402

if args.threads:
    torch.set_num_threads(args.threads)
torch.backends.cuda.matmul.allow_tf32 = args.tf32
torch.backends.cudnn.allow_tf32 = args.tf32
# As the reference's main.py runs it: cuDNN times its algorithms on the first call of each shape
# (the warm-up calls below) and keeps the fastest.
torch.backends.cudnn.benchmark = True
torch.manual_seed(0)
dev = torch.device(args.device)
channels, size, ngf = (1, 28, 64) if args.config == 'mnist' else (3, 32, 128)

config = types.SimpleNamespace(
    data=types.SimpleNamespace(logit_transform=False, channels=channels, image_size=size),
    model=types.SimpleNamespace(ngf=ngf, num_classes=10))
model = CondRefineNetDilated(config).to(dev)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
sigmas = torch.tensor([math.exp(math.log(1.0) + i / 9 * (math.log(0.01) - math.log(1.0)))
                       for i in range(10)], device=dev)
x = torch.rand(args.batch, channels, size, size, device=dev)


def count_forward_gflop():
    """2 × the multiply-adds of every convolution in one forward pass, per image."""
    macs = []

    def hook(m, inputs, out):
        macs.append(out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])
    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(x[:1], torch.zeros(1, dtype=torch.long, device=dev))
    for h in hooks:
        h.remove()
    return 2 * sum(macs) / 1e9


def anneal_dsm(x, labels, z):
    # losses/dsm.py anneal_dsm_score_estimation, anneal_power = 2, with its torch.randn_like(x)
    # drawn beforehand as z
    used = sigmas[labels].view(x.shape[0], 1, 1, 1)
    perturbed = x + z * used
    target = -1 / used ** 2 * (perturbed - x)
    scores = model(perturbed, labels).view(x.shape[0], -1)
    loss = 0.5 * ((scores - target.view(x.shape[0], -1)) ** 2).sum(-1) * used.squeeze() ** 2
    return loss.mean()


# The labels and noise of a training step are drawn before its clock starts, as refinenet_step
# draws them; the forward pass's labels are refinenet_step's too, i mod 10.
def draw():
    return torch.randint(0, 10, (args.batch,), device=dev), torch.randn_like(x)


def step(labels, z):
    loss = anneal_dsm(x, labels, z)
    opt.zero_grad()
    loss.backward()
    opt.step()


forward_labels = torch.arange(args.batch, device=dev) % 10


def forward():
    with torch.no_grad():
        model(x, forward_labels)


def langevin(n_steps_each, step_lr=2e-5):
    # anneal_Langevin_dynamics of the reference's runners/anneal_runner.py, without recording.
    with torch.no_grad():
        x_mod = torch.rand(args.batch, channels, size, size, device=dev)
        for c, sigma in enumerate(sigmas):
            labels = torch.full((args.batch,), c, dtype=torch.long, device=dev)
            step_size = step_lr * (sigma / sigmas[-1]) ** 2
            for _ in range(n_steps_each):
                noise = torch.randn_like(x_mod) * torch.sqrt(step_size * 2)
                grad = model(x_mod, labels)
                x_mod = x_mod + step_size * grad + noise
        return x_mod


def sync():
    if dev.type == 'cuda':
        torch.cuda.synchronize()


def timeit(f, n, prepare=tuple):
    """Mean and best of n timed calls f(*prepare()) after a warm-up; prepare is not timed."""
    f(*prepare())  # warm-up
    sync()
    ts = []
    for _ in range(n):
        a = prepare()
        sync()
        t = time.perf_counter()
        f(*a)
        sync()
        ts.append(time.perf_counter() - t)
    return sum(ts) / len(ts), min(ts)


gflop = count_forward_gflop()
print(f'torch {torch.__version__}, {args.config}, device {dev}, tf32 {args.tf32}, '
      f'{torch.get_num_threads()} threads, batch {args.batch}, {gflop:.4f} GFLOP per image forward')
if dev.type == 'cuda':
    # What torch actually applied, not only what was asked.
    print(f'{torch.cuda.get_device_name(dev)}, cuDNN {torch.backends.cudnn.version()}, '
          f'matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}, '
          f'cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, '
          f'cudnn.benchmark {torch.backends.cudnn.benchmark}')
for name, f, prepare, g in [('train step', step, draw, 3 * gflop),
                            ('forward', forward, tuple, gflop)]:
    mean, best = timeit(f, args.steps, prepare)
    print(f'{name:10s}: mean {mean:.4f} s, best {best:.4f} s, '
          f'{g * args.batch / mean:.0f} GFLOP/s (mean)')
if args.langevin:
    langevin(1)  # warm-up: the noise and update kernels, as the training step's warm-up
    sync()
    t = time.perf_counter()
    out = langevin(args.langevin)
    sync()
    s = time.perf_counter() - t
    steps = 10 * args.langevin
    print(f'annealed Langevin: {steps} steps of {args.batch} chains in {s:.3f} s '
          f'({1e3 * s / steps:.2f} ms per step; all finite: {bool(torch.isfinite(out).all())}) '
          f'-> {args.batch / (s * 1000 / steps):.2f} images/s for the full 1000-step schedule')
if dev.type == 'cpu':
    print(f'peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')
else:
    print(f'peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB')
