#!/usr/bin/env python3
"""The tutorial's pipeline demo, with the tutorial's exact command line, run by pipesim.

    python examples/pipeline_simulation.py
    python examples/pipeline_simulation.py --batch-size 64 --hidden-size 128
    python examples/pipeline_simulation.py --visualize

A 4-layer MLP (Linear+ReLU per stage) is split over 4 processes; activations flow forward
through the stages with point-to-point sends, microbatch by microbatch, and the stages overlap.
Flags: --world-size/-w, --batch-size/-b, --hidden-size, --num-microbatches/-m,
--backend {gloo,nccl}, --visualize. Everything else pipesim can do: `pipesim run --help`.
"""

from __future__ import annotations

import argparse
import sys

from pipesim.cli import main as pipesim_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulate pipeline parallelism with send/recv")
    parser.add_argument("--world-size", "-w", type=int, default=4,
                        help="Number of pipeline stages (default: 4)")
    parser.add_argument("--batch-size", "-b", type=int, default=32,
                        help="Batch size per microbatch (default: 32)")
    parser.add_argument("--hidden-size", type=int, default=64,
                        help="Model hidden dimension (default: 64)")
    parser.add_argument("--num-microbatches", "-m", type=int, default=4,
                        help="Number of microbatches to process (default: 4)")
    parser.add_argument("--backend", type=str, default="gloo", choices=["gloo", "nccl"],
                        help="Distributed backend")
    parser.add_argument("--visualize", action="store_true",
                        help="Show pipeline visualization and exit")
    args = parser.parse_args(argv)
    forwarded = ["run", "--schedule", "forward", "-w", str(args.world_size),
                 "-b", str(args.batch_size), "--hidden-size", str(args.hidden_size),
                 "-m", str(args.num_microbatches), "--backend", args.backend]
    if args.visualize:
        forwarded.append("--visualize")
    return pipesim_main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
