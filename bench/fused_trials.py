"""K same-structure trials fused into one vmapped model (model/fused.py) vs the K trials stepped one
after another in one process: trial-steps per second, and the ratio.

    python bench/fused_trials.py                        # resnet8, 32x32, batch 32 on this CPU
    python bench/fused_trials.py --device cuda --full   # resnet32, 32x32, batch 512 (CIFAR-LT trials)
"""

from __future__ import annotations

import argparse
import time

import torch
from common import device_name, sync, write_table

from hybridlt.model.fused import FusedObjectives, fused_optimizer
from hybridlt.model.hybrid import HybridObjective, create_hybrid_net
from hybridlt.model.losses import build_classifier_loss, build_contrastive_loss
from hybridlt.model.optim import build_optimizer


def objective(seed, backbone, classes, device):
    torch.manual_seed(seed)
    net = create_hybrid_net(backbone, classes, 3, proj_dim=128)
    return HybridObjective(net, build_contrastive_loss("sc", classes, 128, temperature=0.1),
                           build_classifier_loss("ce", [1] * classes, 10)).to(device)


def bench(k, backbone, batch, classes, steps, device):
    cuda = device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    cx = torch.randn(k, batch, 2, 3, 32, 32, device=device, generator=gen)
    cy = torch.randint(0, classes, (k, batch), device=device, generator=gen)
    ex = torch.randn(k, batch, 3, 32, 32, device=device, generator=gen)
    ey = torch.randint(0, classes, (k, batch), device=device, generator=gen)
    alphas = torch.linspace(0.2, 0.8, k, device=device)
    separate = [objective(s, backbone, classes, device) for s in range(k)]
    opts = [build_optimizer(o, 0.1) for o in separate]

    def run_separate():
        for i, (o, opt) in enumerate(zip(separate, opts, strict=True)):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss, _, _ = o(cx[i], cy[i], ex[i], ey[i], float(alphas[i]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    fused = FusedObjectives([objective(s, backbone, classes, device) for s in range(k)]).to(device)
    fopt = fused_optimizer(fused, 0.1)

    def run_fused():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss, _, _ = fused(cx, cy, ex, ey, alphas)
        fopt.zero_grad(set_to_none=True)
        loss.sum().backward()
        fopt.step()

    rates = []
    for fn in (run_separate, run_fused):
        for _ in range(2):
            fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        rates.append(k * steps / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    backbone, batch, classes = ("resnet32", 512, 100) if args.full else ("resnet8", 32, 10)
    steps = args.steps or (30 if args.full else 3)
    rows = []
    for k in args.counts:
        sep, fus = bench(k, backbone, batch, classes, steps, device)
        rows.append([k, f"{sep:.2f}", f"{fus:.2f}", f"{fus / sep:.2f}"])
    write_table(f"fused_trials_{device.type}{'_full' if args.full else ''}",
                f"Fused trials vs separate trials on {device_name(device)}",
                ["trials", "separate trial-steps/s", "fused trial-steps/s", "fused / separate"], rows,
                [f"{backbone}, 32x32, batch {batch} per stream and trial, {classes} classes, SupCon + CE; "
                 f"{steps} timed steps after 2 warm-up; separate = the K trials stepped in turn, one process."])


if __name__ == "__main__":
    main()
