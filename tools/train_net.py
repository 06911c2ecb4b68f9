#!/usr/bin/env python
"""Train and evaluate a re-ID model from a config: argument parsing and nothing else.

Examples:
    python tools/train_net.py --config-file configs/demo.yaml
    python tools/train_net.py --config-file configs/market1501/ir_am_softmax.yaml data.root /data
    python tools/train_net.py --config-file F --resume                # continue data.save_dir's run
    python tools/train_net.py --config-file F --eval-only model.load_weights W.pth --visrank 10
    torchrun --nproc_per_node 2 tools/train_net.py --config-file F    # distributed (gloo on CPU)

Options (--config-file, --eval-only, --resume, --visrank) may come before, between
or after the KEY VALUE overrides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reid_ir.engine.launch import launch
from reid_ir.engine.run import is_config_key, main


def _resume_without_path(argv: list[str]) -> list[str]:
    """``--resume KEY VALUE ...`` means "resume data.save_dir's run", not "resume from the file KEY".

    ``--resume`` takes an optional PATH, so argparse would read the override
    key that follows it as that path; a config key that is no existing file is
    turned back into an override here.
    """
    out = list(argv)
    for i, token in enumerate(out[:-1]):
        nxt = out[i + 1]
        if token == "--resume" and is_config_key(nxt) and not Path(nxt).exists():
            out[i] = "--resume=auto"
    return out


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
    parser.add_argument("opts", nargs="*", help="config overrides: KEY VALUE ...")
    argv = sys.argv[1:] if argv is None else list(argv)
    # intermixed: options may also follow the overrides (argparse.REMAINDER read them as keys)
    return parser.parse_intermixed_args(_resume_without_path(argv))


if __name__ == "__main__":
    sys.exit(launch(main, parse_args()))
