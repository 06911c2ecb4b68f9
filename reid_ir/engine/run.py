"""parse_args(argv) -> args, setup(args) -> cfg, main(args) -> exit code: ``tools/train_net.py``.

The command line is ``[--config-file FILE]... [--eval-only] [--resume [PATH]] [--visrank N]
KEY VALUE ...``: the options may come before, between or after the overrides, and
``--config-file`` may be given more than once (merged in order, a later file wins, e.g.
``configs/methods/clmle.yaml`` then ``configs/datasets/dukemtmcreid.yaml``).

Exit codes: 0 done; 2 bad input (config, data, output folder, checkpoint; one
log line says what and where); 3 training diverged (NaN/inf loss, weights or
features; the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reid_ir.config import load_cfg, save_cfg
from reid_ir.engine.launch import check_output_folder, init_distributed, setup_logging
from reid_ir.errors import DIVERGED_ERRORS, USER_ERRORS, ConfigError

logger = logging.getLogger("reid_ir")

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3


def is_config_key(name: str) -> bool:
    """True when ``name`` is a config key (``train.lr``) or section (``train``)."""
    from reid_ir.config.defaults import get_cfg

    node: Any = get_cfg()
    for part in name.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


#: the options and how many values each takes ("?": an optional PATH)
OPTIONS = {"--config-file": 1, "--eval-only": 0, "--resume": "?", "--visrank": 1, "--help": 0, "-h": 0}


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


def parse_args(argv: list[str], description: str | None = None) -> argparse.Namespace:
    """The command line ``argv`` (without the program name) -> options and ``opts`` (KEY VALUE ...).

    ``config_file`` is a list (empty: the defaults only); ``description`` heads ``--help``.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", action="append", default=[], metavar="FILE",
                        help="YAML config (may use _BASE_); give it again to merge more files in order, "
                             "a later one winning (a method, then configs/datasets/<dataset>.yaml)")  # fmt: skip
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate the weights of model.load_weights, --resume or model.pretrained")  # fmt: skip
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                        help="resume from a checkpoint file or run folder (default: data.save_dir's last checkpoint)")  # fmt: skip
    parser.add_argument("--visrank", type=int, default=0, metavar="N", help="write ranked results of N queries")
    parser.add_argument("opts", nargs="*", help="config overrides: KEY VALUE ...")
    # split first: argparse.REMAINDER read options after the overrides as keys, and
    # argparse alone would read an override's value such as -1e-3 as an option
    options, opts = split_argv(list(argv))
    args = parser.parse_args(options)
    args.opts = opts
    return args


def check_weights_to_evaluate(cfg: Any) -> None:
    """``--eval-only`` needs weights: ``model.load_weights``, ``--resume`` or ``model.pretrained``.

    Raises:
        ConfigError: evaluation only, of a randomly initialised network.
    """
    if cfg.test.evaluate and not (
        cfg.model.load_weights or cfg.model.resume or cfg.model.pretrained
    ):
        raise ConfigError(
            "--eval-only (test.evaluate True) has no weights to evaluate: give trained ones with "
            "model.load_weights W.pth or --resume RUN, or set model.pretrained True to evaluate "
            "the ImageNet backbone; a randomly initialised network is not evaluated"
        )


class _StartLog(logging.handlers.BufferingHandler):
    """Keeps the log records of a run's start until its folder is opened (or the start fails)."""

    def __init__(self) -> None:
        super().__init__(capacity=0)

    def shouldFlush(self, record: logging.LogRecord) -> bool:  # noqa: N802 - logging's name
        return False


def _hold_start_log() -> None:
    _drop_start_log()
    logging.getLogger().addHandler(_StartLog())


def _drop_start_log() -> list[logging.LogRecord]:
    """Remove the start buffer from the root logger; returns the records it held."""
    records: list[logging.LogRecord] = []
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _StartLog):
            root.removeHandler(h)
            records += h.buffer
            h.close()
    return records


def open_run_folder(cfg: Any, rank: int = 0) -> None:
    """The run has really started: create ``data.save_dir``, write ``config.yaml`` and ``log.txt``.

    Called once data, model and loss are built and a resumed checkpoint is loaded and
    checked, so a start that fails earlier leaves an existing folder byte for byte as it
    was and creates no new one. ``log.txt`` receives the records logged since ``setup``.
    """
    records = _drop_start_log()
    setup_logging(cfg.data.save_dir, rank=rank)
    files = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.FileHandler) and getattr(h, "_reid_ir", False)
    ]
    for record in records:
        for h in files:
            if record.levelno >= h.level:
                h.handle(record)
    if rank == 0:
        save_cfg(cfg, Path(cfg.data.save_dir) / "config.yaml")


def setup(args: Any):
    """Merge and check the config and the output folder; console logging.

    Nothing is written to the output folder here (see :func:`open_run_folder`).

    Returns:
        (cfg, rank, world_size)
    """
    from reid_ir.engine import distributed as dist_utils

    opts = list(args.opts or [])
    if opts and opts[0] == "--":
        opts = opts[1:]
    cfg = load_cfg(args.config_file, opts, freeze=False)
    if args.eval_only:
        cfg.test.evaluate = True
    if args.visrank:
        cfg.test.visrank = True
        cfg.test.visrank_num = args.visrank
    if args.resume and args.resume != "auto":
        cfg.model.resume = args.resume
    elif args.resume == "auto":
        cfg.model.resume = cfg.data.save_dir
    check_weights_to_evaluate(cfg)
    cfg.freeze()
    rank, world = init_distributed(timeout_minutes=cfg.train.dist_timeout_minutes)
    check_output_folder(
        cfg.data.save_dir, resume=bool(cfg.model.resume), eval_only=cfg.test.evaluate
    )
    dist_utils.barrier()  # every rank checked the folder before rank 0 writes into it
    setup_logging(None, rank=rank)  # log.txt is opened by open_run_folder, once the run starts
    _hold_start_log()
    logger.info(
        "config %s -> output %s (%d process%s)",
        " + ".join(args.config_file) or "(defaults)",
        cfg.data.save_dir,
        world,
        "es" if world > 1 else "",
    )
    return cfg, rank, world


def format_results(results: dict, ranks=(1, 5)) -> str:
    """A small Markdown table of rank-k and mAP per target dataset."""
    header = "| dataset | " + " | ".join(f"rank-{r}" for r in ranks) + " | mAP | mINP |"
    lines = [header, "|" + "---|" * (len(ranks) + 3)]
    for name, m in results.items():
        cells = [f"{100 * m[f'rank{r}']:.1f}" for r in ranks] + [
            f"{100 * m['mAP']:.1f}",
            f"{100 * m['mINP']:.1f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _resume(engine, cfg: Any, auto: bool) -> None:
    """Resume from ``model.resume``; ``--resume`` on a folder without a checkpoint starts afresh."""
    from reid_ir.engine.checkpoint import find_checkpoint

    if auto and find_checkpoint(cfg.model.resume) is None:
        logger.warning(
            "--resume: %s holds no complete checkpoint yet; starting from epoch 1", cfg.model.resume
        )
        return
    engine.resume(cfg.model.resume)


def train_and_evaluate(
    cfg: Any, auto_resume: bool = False, on_start: Callable[[], None] | None = None
) -> dict:
    """Build the engine from cfg, resume if asked, run; returns the run's summary.

    Args:
        cfg: the run's config.
        auto_resume: ``--resume`` without a path (a folder without a checkpoint starts afresh).
        on_start: called once the engine is built and resumed, before any training or
            evaluation (the CLI opens the run folder there).
    """
    from reid_ir.engine.builder import build_engine, engine_run_kwargs
    from reid_ir.evaluation.settings import EvalSettings

    engine = build_engine(cfg)
    if cfg.model.resume:
        _resume(engine, cfg, auto_resume)
    if on_start is not None:
        on_start()
    tic = time.time()
    if cfg.test.evaluate:
        results = engine.test(
            EvalSettings.from_cfg(cfg), save_dir=cfg.data.save_dir, visrank=cfg.test.visrank
        )
    else:
        results = engine.run(**engine_run_kwargs(cfg))
    summary = {
        "results": results,
        "train_seconds": round(getattr(engine, "train_time", 0.0), 1),
        "wall_seconds": round(time.time() - tic, 1),
        "epochs": cfg.train.max_epoch,
        "loss": cfg.loss.name,
        "model": cfg.model.name,
        "world_size": engine.world_size,
        "skipped_images": {k: len(v) for k, v in getattr(engine, "skipped_images", {}).items()},
    }
    if engine.is_main_process:
        from reid_ir.engine.checkpoint import atomic_write_text

        atomic_write_text(
            Path(cfg.data.save_dir) / "final_metrics.json",
            json.dumps(summary, indent=2, sort_keys=True),
        )
    return summary


def main(args: Any) -> int:
    """Entry point of ``tools/train_net.py``; returns the process exit code."""
    try:
        cfg, rank, _ = setup(args)
        summary = train_and_evaluate(
            cfg, auto_resume=args.resume == "auto", on_start=lambda: open_run_folder(cfg, rank)
        )
    except DIVERGED_ERRORS as e:
        logging.basicConfig()
        logger.error("%s: %s", type(e).__name__, e)
        return EXIT_DIVERGED
    except USER_ERRORS as e:
        logging.basicConfig()
        logger.error("%s: %s", type(e).__name__, e)
        logger.debug("traceback", exc_info=True)
        return EXIT_USER_ERROR
    finally:
        _drop_start_log()  # a failed start: its records are not written anywhere but the console
    if rank == 0 and summary["results"]:
        print(
            format_results(
                summary["results"], ranks=[r for r in cfg.test.ranks if r <= 10][:3] or [1]
            )
        )
    return 0
