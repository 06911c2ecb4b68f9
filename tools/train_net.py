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

#: the options and how many values each takes ("?": an optional PATH)
OPTIONS = {
    "--config-file": 1,
    "--eval-only": 0,
    "--resume": "?",
    "--visrank": 1,
    "--help": 0,
    "-h": 0,
}


def _option(token: str) -> str | None:
    """The option ``token`` names (exactly, or by an unambiguous prefix of a long option)."""
    if token in OPTIONS:
        return token
    found = [o for o in OPTIONS if o.startswith("--") and len(token) > 2 and o.startswith(token)]
    return found[0] if len(found) == 1 else None


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split a command line into (options with their values, KEY VALUE overrides).

    Options may come before, between or after the overrides. A token in a key position that
    starts with ``-`` is an option (an unknown one is left for argparse to report); a value
    is never taken for an option, so ``train.lr -1e-3`` works. ``--resume`` takes the next
    token as its PATH unless it is a config key that is no existing file ("--resume KEY VALUE"
    resumes data.save_dir's run). Everything after ``--`` is overrides.
    """
    options: list[str] = []
    opts: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            opts += argv[i:]
            break
        if len(opts) % 2 or not token.startswith("-"):  # a value, or a key
            opts.append(token)
            continue
        name, eq, _ = token.partition("=")
        option = _option(name)
        options.append(option + token[len(name) :] if option else token)
        if option is None or eq:
            continue
        nargs = OPTIONS[option]
        if nargs == 1 and i < len(argv):
            options.append(argv[i])
            i += 1
        elif nargs == "?" and i < len(argv) and not argv[i].startswith("-"):
            nxt = argv[i]
            if Path(nxt).exists() or not is_config_key(nxt):
                options.append(nxt)
                i += 1
    return options, opts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", default="", metavar="FILE", help="YAML config (may use _BASE_)"
    )
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate the weights of model.load_weights, --resume or model.pretrained",
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
    # split first: argparse.REMAINDER read options after the overrides as keys, and
    # argparse alone would read an override's value such as -1e-3 as an option
    options, opts = split_argv(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(options)
    args.opts = opts
    return args


if __name__ == "__main__":
    sys.exit(launch(main, parse_args()))
