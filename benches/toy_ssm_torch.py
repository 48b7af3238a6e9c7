"""The toy_ssm bench's loop in PyTorch, for a side-by-side timing (a tool, not a dependency).

MLP 2-128-128-2 with softplus, Adam(lr=1e-3), batch 128 from 0.2 N((-5,-5), I) + 0.8 N((5,5), I),
SSM-VR with one Gaussian projection per sample (the semantics of the reference's
`sliced_score_estimation_vr`), 10,000 steps.

    python3 benches/toy_ssm_torch.py [steps] [threads]
"""
import sys
import time

import torch


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 128), torch.nn.Softplus(),
        torch.nn.Linear(128, 128), torch.nn.Softplus(),
        torch.nn.Linear(128, 2),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    means = torch.tensor([[-5.0, -5.0], [5.0, 5.0]])
    weights = torch.tensor([0.2, 0.8])

    def ssm_vr(x):
        x = x.detach().requires_grad_(True)
        v = torch.randn_like(x)
        s = net(x)
        (jvp,) = torch.autograd.grad((s * v).sum(), x, create_graph=True)
        return (0.5 * (s * s).sum(-1) + (v * jvp).sum(-1)).mean()

    t0 = time.perf_counter()
    for _ in range(steps):
        k = torch.multinomial(weights, 128, replacement=True)
        x = means[k] + torch.randn(128, 2)
        loss = ssm_vr(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    print(f"torch {torch.__version__}, {threads} threads: {steps} steps in {dt:.2f} s "
          f"({dt / steps * 1e6:.0f} us/step), last loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
