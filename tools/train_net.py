#!/usr/bin/env python
"""Train and evaluate a re-ID model from a config: argument parsing and nothing else.

Examples:
    python tools/train_net.py --config-file configs/demo.yaml
    python tools/train_net.py --config-file configs/market1501/ir_am_softmax.yaml data.root /data
    python tools/train_net.py --config-file F --resume                # continue data.save_dir's run
    python tools/train_net.py --config-file F --eval-only model.load_weights W.pth --visrank 10
    torchrun --nproc_per_node 2 tools/train_net.py --config-file F    # distributed (gloo on CPU)
"""

from __future__ import annotations

import argparse
import sys

from reid_ir.engine.launch import launch
from reid_ir.engine.run import main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", default="", metavar="FILE", help="YAML config (may use _BASE_)"
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="only evaluate (use model.load_weights)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="PATH",
        help="resume from a checkpoint file or run folder (default: data.save_dir's last checkpoint)",
    )
    parser.add_argument(
        "--visrank", type=int, default=0, metavar="N", help="write ranked results of N queries"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(launch(main, parse_args()))
