"""Cost of the long-tail diagnostics (group confusion, weight norms, logit-adjusted and τ-normalised
accuracy) against a plain evaluation pass over the same batches.

Times ``count_eval`` without and with the diagnostics (model/evaluate.py) on a HybridNet in eval
mode, best of 5 after a warm-up, and writes ``bench/results/eval_diagnostics_<cpu|cuda>.md``.

Usage: python bench/eval_diagnostics.py [--device cuda] [--images 2048] [--batch 512]
"""

from __future__ import annotations

import argparse

import torch
from common import best_time, device_name, write_table

from hybridlt.data.long_tail import long_tail_counts, shot_groups
from hybridlt.model.evaluate import count_eval, diagnostics_report
from hybridlt.model.hybrid import create_hybrid_net


def measure(backbone: str, classes: int, images: int, batch: int, device: torch.device, repeats: int = 9) -> list:
    net = create_hybrid_net(backbone, classes, 3, 128).to(device).eval()
    counts = long_tail_counts(classes, 500, 100.0)
    groups = shot_groups(counts, 100, 20)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(images, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, classes, (images,), generator=g).to(device)

    def batches():
        return ((x[i:i + batch], y[i:i + batch]) for i in range(0, images, batch))

    def run_plain():
        return count_eval(net, batches(), classes, device).correct.tolist()

    def run_diag():
        return diagnostics_report(count_eval(net, batches(), classes, device, None, counts, groups), groups)

    # alternate the two, many times, keep each one's fastest: a shared machine's noise hits both alike
    plain = with_diag = float("inf")
    for _ in range(repeats):
        plain = min(plain, best_time(run_plain, device, repeats=1, warmup=0))
        with_diag = min(with_diag, best_time(run_diag, device, repeats=1, warmup=0))
    return [backbone, classes, images, f"{plain * 1e3:.1f}", f"{with_diag * 1e3:.1f}",
            f"{100 * (with_diag - plain) / plain:+.1f}%"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.set_num_threads(1)  # one core: steadier on a shared machine
    rows = [measure(b, c, args.images, args.batch, device) for b, c in (("resnet32", 10), ("resnet32", 100),
                                                                         ("resnet32", 1000))]
    write_table(f"eval_diagnostics_{device.type}", f"Evaluation with and without the long-tail diagnostics "
                f"({device_name(device)})", ["backbone", "classes", "test images", "plain eval (ms)",
                                             "with diagnostics (ms)", "extra"], rows,
                [f"Fastest of 9 timed passes of each, the two alternated; batch {args.batch}; 32x32 images; "
                 "the diagnostics include the host copy and the report (`diagnostics_report`). "
                 "Goal: under 5% of evaluation time.",
                 f"Measured with `python bench/eval_diagnostics.py --device {device.type}`."])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
