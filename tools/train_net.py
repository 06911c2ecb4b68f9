#!/usr/bin/env python
"""Train and evaluate a re-ID model from a config (reid_ir.engine.run: parser and main).

Examples:
    python tools/train_net.py --config-file configs/demo.yaml
    python tools/train_net.py --config-file configs/methods/ir_am_softmax.yaml data.root /data
    python tools/train_net.py --config-file configs/methods/clmle.yaml --config-file configs/datasets/dukemtmcreid.yaml
    python tools/train_net.py --config-file F --resume                # continue data.save_dir's run
    python tools/train_net.py --config-file F --eval-only model.load_weights W.pth --visrank 10
    torchrun --nproc_per_node 2 tools/train_net.py --config-file F    # distributed (gloo on CPU)

Options (--config-file, --eval-only, --resume, --visrank) may come before, between
or after the KEY VALUE overrides. --config-file may be given more than once: the files
merge in order, a later one winning (a method config, then configs/datasets/<dataset>.yaml).
"""

import sys

from reid_ir.engine.launch import launch
from reid_ir.engine.run import main, parse_args

if __name__ == "__main__":
    sys.exit(launch(main, parse_args(sys.argv[1:], description=__doc__)))
