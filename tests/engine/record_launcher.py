"""Runs the train_net command line (reid_ir.engine.run) under torchrun and records what each rank holds, for the DDP test.

    torchrun --standalone --nproc_per_node 2 tests/engine/record_launcher.py PREFIX ARGS... [+ ARGS...]

Each ``+``-separated group of train_net arguments is one run, in the same
process group. For run i, rank r writes ``PREFIX.run{i}.rank{r}.json``:

* ``steps``: after every optimizer step (and the state hooks), the batch's
  labels and SHA-1 digests of the model parameters, the loss's state (IR
  centers included) and the CLMLE cluster centroids;
* ``epochs``: after every epoch, a digest of the model's parameters *and* buffers;
* ``writes``: the files this rank wrote through the checkpoint / metrics writers;
* ``exit``: main's exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch


def digest(tensors) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str]) -> int:
    from reid_ir.engine import builder, evaluation
    from reid_ir.engine import checkpoint as ckpt
    from reid_ir.engine.hooks.base import PRIORITY_DIAGNOSTICS, HookBase
    from reid_ir.engine.run import main as train_net_main
    from reid_ir.engine.run import parse_args
    from reid_ir.losses.clusters import ClusterBank

    prefix, rest = argv[0], argv[1:]
    runs, current = [], []
    for token in rest:
        if token == "+":
            runs.append(current)
            current = []
        else:
            current.append(token)
    runs.append(current)
    rank = int(os.environ.get("RANK", "0"))
    record: dict = {}

    class Recorder(HookBase):
        priority = PRIORITY_DIAGNOSTICS  # after the centers / clusters were updated

        def after_step(self) -> None:
            t = self.trainer
            clusters = next((m for m in t.criterion.modules() if isinstance(m, ClusterBank)), None)
            record["steps"].append({
                "epoch": t.epoch, "batch": t.batch_idx,
                "targets": t.step_outputs["targets"].tolist(),
                "model": digest(t.model.parameters()),
                "criterion": digest(t.criterion.state_dict().values()),
                "clusters": digest([clusters.centroids]) if clusters is not None and clusters.has_clusters else None,
            })  # fmt: skip

        def after_epoch(self) -> None:
            t = self.trainer
            record["epochs"].append(digest(t.model.state_dict().values()))

    build_hooks = builder.build_hooks
    builder.build_hooks = lambda *args, **kwargs: [*build_hooks(*args, **kwargs), Recorder()]

    def spy(fn, path_arg: int = 0):
        def wrapper(*args, **kwargs):
            record["writes"].append(str(args[path_arg]))
            return fn(*args, **kwargs)

        return wrapper

    ckpt.atomic_torch_save = spy(ckpt.atomic_torch_save, 1)
    ckpt.atomic_write_text = spy(ckpt.atomic_write_text, 0)
    evaluation.write_evaluation = spy(evaluation.write_evaluation, 1)

    worst = 0
    for i, args in enumerate(runs):
        record.clear()
        record.update({"steps": [], "epochs": [], "writes": []})
        record["exit"] = train_net_main(parse_args(args))
        worst = max(worst, record["exit"])
        Path(f"{prefix}.run{i}.rank{rank}.json").write_text(json.dumps(record))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
