"""SC, PSC and MPSC forward + backward: time and peak memory as the batch and the classes grow,
against naive implementations written the conventional way (explicit masks, exp/log, Python
loops over prototypes).

Each point runs in a fresh process so that peak memory is its own: on CUDA the allocator's peak,
on CPU the growth of the resident set (ru_maxrss) over the process's size before the call.

    python bench/losses.py [--device cuda] [--max-batch 8192]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from common import ROOT, device_name, sync, write_table

from hybridlt.model.losses import MPSCLoss, PSCLoss, SupConLoss

DIM, VIEWS, TAU = 128, 2, 0.1


def naive_supcon(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SC as usually written: float masks, max-shifted logits, exp, log of the sum."""
    z = z.reshape(-1, z.shape[-1])
    y = y.repeat_interleave(VIEWS)
    logits = z @ z.T / TAU
    logits = logits - logits.max(1, keepdim=True).values.detach()
    mask = (y[:, None] == y[None, :]).float()
    not_self = torch.ones_like(mask) - torch.eye(len(y), device=z.device)
    mask = mask * not_self
    exp_logits = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    return -((mask * log_prob).sum(1) / mask.sum(1).clamp(min=1)).mean()


def naive_psc(z: torch.Tensor, y: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """PSC as usually written: exp of all logits, the positive subtracted from the denominator."""
    z = z.reshape(-1, z.shape[-1])
    y = y.repeat_interleave(VIEWS)
    logits = z @ F.normalize(protos, dim=-1).T / TAU
    exp = torch.exp(logits)
    onehot = F.one_hot(y, protos.shape[0]).float()
    pos = (exp * onehot).sum(1)
    return -torch.log(pos / (exp.sum(1) - pos)).mean()


def naive_mpsc(z: torch.Tensor, y: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """MPSC with a Python loop over the M prototypes of each class."""
    z = z.reshape(-1, z.shape[-1])
    y = y.repeat_interleave(VIEWS)
    p = F.normalize(protos, dim=-1)
    c, m, _ = p.shape
    per_k = [z @ p[:, k].T / TAU for k in range(m)]  # M x [N, C]
    onehot = F.one_hot(y, c).float()
    neg = sum((torch.exp(s) * (1 - onehot)).sum(1) for s in per_k)
    pos = torch.stack([(s * onehot).sum(1) for s in per_k], 1)
    w = torch.softmax(pos.detach(), 1)
    return -(w * (pos - torch.log(neg)[:, None])).sum(1).mean()


def one_point(kind: str, impl: str, batch: int, classes: int, device: torch.device, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    z0 = F.normalize(torch.randn(batch, VIEWS, DIM, generator=g), dim=-1).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    if kind == "sc":
        module = SupConLoss(TAU, classes)
        fn = module if impl == "ours" else naive_supcon
    else:
        m = 4 if kind == "mpsc" else 1
        module = (PSCLoss(classes, DIM, TAU) if kind == "psc" else MPSCLoss(classes, DIM, m, TAU)).to(device)
        naive = naive_psc if kind == "psc" else naive_mpsc
        fn = module if impl == "ours" else (lambda z, y: naive(z, y, module.prototypes))

    def step():
        z = z0.clone().requires_grad_(True)
        fn(z, y).backward()

    step()  # warm-up (allocator, kernels)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"ms": 1000 * min(times), "peak_mb": max(0, peak - base) / 2**20}


def run_point(args, kind, impl, batch, classes) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, impl, str(batch), str(classes), "--device", args.device,
           "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"ms": float("nan"), "peak_mb": float("nan"), "error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=4, metavar=("KIND", "IMPL", "BATCH", "CLASSES"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.one:
        kind, impl, batch, classes = args.one
        print(json.dumps(one_point(kind, impl, int(batch), int(classes), device, args.repeats)))
        return
    max_batch = args.max_batch or (8192 if device.type == "cuda" else 4096)
    batches = [b for b in (256, 1024, 4096, 8192) if b <= max_batch]
    rows = []
    for batch in batches:
        for kind in ("sc", "psc", "mpsc"):
            ours, naive = run_point(args, kind, "ours", batch, 100), run_point(args, kind, "naive", batch, 100)
            rows.append([kind, batch, 100, f"{ours['ms']:.1f}", f"{naive['ms']:.1f}", f"{ours['peak_mb']:.1f}",
                         f"{naive['peak_mb']:.1f}"])
    for classes in (10, 1000, 8142):
        for kind in ("psc", "mpsc"):
            ours, naive = run_point(args, kind, "ours", 1024, classes), run_point(args, kind, "naive", 1024, classes)
            rows.append([kind, 1024, classes, f"{ours['ms']:.1f}", f"{naive['ms']:.1f}", f"{ours['peak_mb']:.1f}",
                         f"{naive['peak_mb']:.1f}"])
    sc_4k = next((r for r in rows if r[0] == "sc" and r[1] == 4096), None)
    psc_4k = next((r for r in rows if r[0] == "psc" and r[1] == 4096 and r[2] == 100), None)
    notes = [f"{VIEWS} views x batch anchors, D = {DIM}, tau = {TAU}, MPSC with M = 4; forward + backward, best of "
             f"{args.repeats}; peak = memory above the inputs during the call."]
    if sc_4k and psc_4k:
        notes.append(f"PSC / SC peak memory at B = 4096, C = 100: {float(psc_4k[5]) / float(sc_4k[5]):.4f} "
                     "(goal <= 0.2): PSC is O(B x C), SC O(B^2).")
    write_table(f"losses_{device.type}", f"Contrastive losses on {device_name(device)}",
                ["loss", "batch", "classes", "ours ms", "naive ms", "ours peak MB", "naive peak MB"], rows, notes)


if __name__ == "__main__":
    main()
