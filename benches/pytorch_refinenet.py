"""Times the reference NCSN model in PyTorch, for comparison with `cargo bench --bench refinenet`.

Usage:
    python3 benches/pytorch_refinenet.py /path/to/ermongroup/ncsn [--batch 128] [--steps 5]

Builds the reference CondRefineNetDilated (MNIST config: 1×28×28, ngf 64, 10 noise levels) from a
checkout of ermongroup/ncsn, and times what benches/refinenet.rs times:
  * one annealed-DSM training step (forward, backward, Adam with lr 1e-3) at the given batch;
  * one forward pass under torch.no_grad() (what annealed Langevin sampling runs).
Prints the mean and best time of each, the effective GFLOP/s (11.36 GFLOP per image for a
training step, 3.79 GFLOP per image for a forward pass: 2 × the convolutions' multiply-adds, ×3
for forward + backward) and the process's peak resident memory.

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
args = p.parse_args()
sys.path.insert(0, args.ncsn)
from models.cond_refinenet_dilated import CondRefineNetDilated  # noqa: E402

if args.threads:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)

config = types.SimpleNamespace(
    data=types.SimpleNamespace(logit_transform=False, channels=1, image_size=28),
    model=types.SimpleNamespace(ngf=64, num_classes=10))
model = CondRefineNetDilated(config)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
sigmas = torch.tensor([math.exp(math.log(1.0) + i / 9 * (math.log(0.01) - math.log(1.0)))
                       for i in range(10)])
x = torch.rand(args.batch, 1, 28, 28)


def anneal_dsm(x, labels):
    # losses/dsm.py anneal_dsm_score_estimation, anneal_power = 2
    used = sigmas[labels].view(x.shape[0], 1, 1, 1)
    perturbed = x + torch.randn_like(x) * used
    target = -1 / used ** 2 * (perturbed - x)
    scores = model(perturbed, labels).view(x.shape[0], -1)
    loss = 0.5 * ((scores - target.view(x.shape[0], -1)) ** 2).sum(-1) * used.squeeze() ** 2
    return loss.mean()


def step():
    labels = torch.randint(0, 10, (args.batch,))
    loss = anneal_dsm(x, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()


def forward():
    with torch.no_grad():
        model(x, torch.randint(0, 10, (args.batch,)))


def timeit(f, n):
    f()  # warm-up
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sum(ts) / len(ts), min(ts)


print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}')
for name, f, gflop in [('train step', step, 11.36), ('forward', forward, 3.786)]:
    mean, best = timeit(f, args.steps)
    print(f'{name:10s}: mean {mean:.3f} s, best {best:.3f} s, '
          f'{gflop * args.batch / mean:.0f} GFLOP/s (mean)')
print(f'peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')
