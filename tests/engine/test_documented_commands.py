"""Every ``tools/train_net.py`` command line shown in the README and in ``--help`` works as written.

Each line runs on tiny synthetic data: its placeholders (``F``, ``W.pth``, ``/path/to/reid-data``,
``...same overrides...``) are filled in and overrides that shorten the run are appended after
it, so the line's own options and overrides are kept where the documentation puts them.
"""

from __future__ import annotations

import ast
import logging
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reid_ir.engine.run import main, parse_args

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "tests" / "tiny.yaml"
SHORT = [
    "model.name", "osnet_x0_25", "model.pretrained", "False", "use_gpu", "False",
    "data.sources", "['synthetic_market']", "data.targets", "['synthetic_market']",
    "data.height", "64", "data.width", "32", "data.workers", "0",
    "data.synthetic.num_train_ids", "6", "data.synthetic.num_test_ids", "4",
    "data.synthetic.images_per_camera", "2", "data.synthetic.num_cameras", "2",
    "data.synthetic.num_distractors", "2", "data.synthetic.num_junk", "2",
    "data.synthetic.image_size", "[64, 32]", "train.batch_size", "8", "train.num_threads", "1",
    "test.batch_size", "16", "diagnostics.weight_center_angle", "False",
]  # fmt: skip

TRAIN_NET = REPO / "tools" / "train_net.py"
_COMMAND = re.compile(r"^\s*(?:\$\s*)?python tools/train_net\.py\s+(.*)$")


def documented_commands() -> list[tuple[str, str]]:
    """(where, argument string) of each ``python tools/train_net.py ...`` line in README and --help."""
    found = []
    for where, text in (("README.md", (REPO / "README.md").read_text(encoding="utf-8")),
                        ("--help", ast.get_docstring(ast.parse(TRAIN_NET.read_text(encoding="utf-8"))))):  # fmt: skip
        for line in text.splitlines():
            m = _COMMAND.match(line)
            if m:
                found.append((where, m.group(1)))
    return found


def test_the_help_shows_the_documented_examples():
    proc = subprocess.run([sys.executable, str(TRAIN_NET), "--help"], capture_output=True, text=True, timeout=300)
    helps = [args for where, args in documented_commands() if where == "--help"]
    assert proc.returncode == 0 and len(helps) >= 4
    assert all(args in proc.stdout for args in helps), proc.stdout
    assert "--config-file FILE" in proc.stdout and "--config-file may be given more than once" in proc.stdout


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A one-epoch run whose checkpoint stands for the documents' weights and run folders."""
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("runs") / "base"
    argv = ["--config-file", str(TINY_YAML), *SHORT, "train.max_epoch", "1",
            "data.root", str(root), "data.save_dir", str(out)]  # fmt: skip
    assert main(parse_args(argv)) == 0
    return root, out


def _fill(args: str, root: Path, run: Path, weights: Path) -> list[str]:
    tokens = []
    for token in shlex.split(args, comments=True):
        if token.startswith("...") or token.endswith("..."):
            continue  # "...same overrides...": the shortening overrides appended below
        if token == "F":
            token = str(TINY_YAML)
        elif token == "W.pth":
            token = str(weights)
        elif token in ("/path/to/reid-data", "/data"):
            token = str(root)
        elif re.fullmatch(r".*checkpoints/epoch_\d+\.pth", token):
            token = str(run / "checkpoints" / "epoch_001.pth")
        elif tokens and tokens[-1] == "--visrank" and token == "N":
            token = "2"
        tokens.append(token)
    return tokens


@pytest.mark.parametrize(
    "where, args", documented_commands(), ids=[f"{w}: {a}" for w, a in documented_commands()]
)
def test_a_documented_command_line_runs(where, args, base_run, tmp_path, caplog):
    root, base = base_run
    run = tmp_path / "run"
    resume = "--resume" in shlex.split(args, comments=True)
    if resume:
        shutil.copytree(base, run)  # a run to continue, in a folder of its own
    argv = _fill(args, root, run, base / "checkpoints" / "epoch_001.pth")
    argv += [*SHORT, "train.max_epoch", "2" if resume else "1",
             "data.root", str(root), "data.save_dir", str(run)]  # fmt: skip
    with caplog.at_level(logging.INFO):
        code = main(parse_args(argv))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 0, (where, argv, errors)
    assert (run / "final_metrics.json").is_file()
    if resume:
        assert "resumed from" in caplog.text
    if "--visrank" in argv:
        assert list(run.rglob("index.html")), "visrank wrote no ranked results"


def test_options_may_follow_the_overrides():
    args = parse_args(["--config-file", "F", "train.lr", "-1", "--eval-only", "--config-file", "G",
                       "model.load_weights", "W.pth", "--visrank", "10", "--resume"])  # fmt: skip
    assert args.config_file == ["F", "G"] and args.eval_only and args.visrank == 10
    assert args.resume == "auto"
    assert args.opts == ["train.lr", "-1", "model.load_weights", "W.pth"]


def test_resume_followed_by_an_override_resumes_the_run_folder():
    args = parse_args(["train.lr", "0.1", "--resume", "train.max_epoch", "3"])
    assert args.resume == "auto" and args.opts == ["train.lr", "0.1", "train.max_epoch", "3"]


def test_eval_only_without_weights_is_an_error_not_a_random_network(tmp_path, caplog):
    out = tmp_path / "out"
    argv = ["--config-file", str(TINY_YAML), "--eval-only", *SHORT,
            "data.root", str(tmp_path / "data"), "data.save_dir", str(out)]  # fmt: skip
    with caplog.at_level(logging.INFO):
        code = main(parse_args(argv))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2
    assert len(errors) == 1 and "--eval-only" in errors[0] and "model.load_weights" in errors[0]
    assert not (tmp_path / "data").exists() and not out.exists(), "fails before any work"


def test_eval_only_with_imagenet_weights_is_allowed():
    from reid_ir.config import load_cfg
    from reid_ir.engine.run import check_weights_to_evaluate

    check_weights_to_evaluate(load_cfg(None, ["test.evaluate", "True", "model.pretrained", "True"]))


@pytest.mark.parametrize(
    "argv, opts",
    [(["train.lr", "-1e-3"], ["train.lr", "-1e-3"]),
     (["data.root", "-odd-name", "--eval-only"], ["data.root", "-odd-name"]),
     (["--", "data.root", "--x"], ["data.root", "--x"])],
)  # fmt: skip
def test_an_override_value_that_starts_with_a_dash_is_a_value(argv, opts):
    assert parse_args(argv).opts == opts


def test_an_unknown_option_is_reported_by_argparse(capsys):
    with pytest.raises(SystemExit):
        parse_args(["train.lr", "0.1", "--eval_only"])
    assert "unrecognized arguments: --eval_only" in capsys.readouterr().err


def test_abbreviated_and_equals_forms_of_the_options_work():
    args = parse_args(["train.lr", "0.1", "--config=F", "--vis", "3", "--resume=auto"])
    assert (args.config_file, args.visrank, args.resume) == (["F"], 3, "auto")
    assert args.opts == ["train.lr", "0.1"]
