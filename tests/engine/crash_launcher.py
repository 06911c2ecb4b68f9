"""Runs the train_net command line (reid_ir.engine.run) and stops dead at a chosen point, for the kill -9 tests.

    python tests/engine/crash_launcher.py POINT MARKER [train_net.py arguments...]
    python tests/engine/crash_launcher.py --serve

``--serve`` imports torch and reid_ir once and then, for every JSON request
``{"point", "marker", "argv", "log"}`` on stdin, forks a fresh process that
runs the training (output to ``log``); it answers ``{"pid"}`` at once and
``{"pid", "status"}`` when that process ends (``status`` -9: killed). The
server itself never computes anything, so every forked run starts from the
state of a newly started interpreter, without paying torch's import again.

At POINT the process writes its pid to the file MARKER and sleeps; the test
then kills it with SIGKILL (an external ``kill -9``, nothing is cleaned up).
The points are installed by patching, in this process only, so the
production code carries no test switches:

* ``step:E:I``      after the hooks of iteration I of epoch E (1-based);
* ``write:NAME``    half-way through writing checkpoint NAME (half its bytes in the temp file);
* ``pointer:NAME``  after checkpoint NAME was renamed into place, before ``last_checkpoint`` names it;
* ``eval:E``        when the evaluation after epoch E starts;
* ``none``          run to the end.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import traceback
from pathlib import Path


def _pause(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:  # until SIGKILL
        time.sleep(1)


def install(point: str, marker: str) -> None:
    """Patch this process so that it pauses at ``point``."""
    import torch

    from reid_ir.engine import checkpoint as ckpt
    from reid_ir.engine.engine import ReidEngine

    kind, _, arg = point.partition(":")
    if kind == "step":
        epoch, it = (int(v) for v in arg.split(":"))
        call = ReidEngine._call_hooks

        def _call_hooks(self, name):
            call(self, name)
            if name == "after_step" and (self.epoch + 1, self.batch_idx + 1) == (epoch, it):
                _pause(marker)

        ReidEngine._call_hooks = _call_hooks
    elif kind == "write":
        save = torch.save

        def _save(obj, f, *args, **kwargs):
            if Path(str(getattr(f, "name", ""))).name.startswith(f".{arg}.tmp"):
                buf = io.BytesIO()
                save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                _pause(marker)
            return save(obj, f, *args, **kwargs)

        torch.save = _save
    elif kind == "pointer":
        write = ckpt.atomic_write_text

        def _write(path, text):
            if Path(path).name == ckpt.POINTER and text.strip() == arg:
                _pause(marker)
            return write(path, text)

        ckpt.atomic_write_text = _write
    elif kind == "eval":
        test = ReidEngine.test

        def _test(self, *args, **kwargs):
            if self.epoch + 1 == int(arg):
                _pause(marker)
            return test(self, *args, **kwargs)

        ReidEngine.test = _test
    elif kind != "none":
        raise ValueError(f"unknown pause point {point!r}")


def run(argv: list[str]) -> int:
    """``crash_launcher.py POINT MARKER args...`` -> train_net's exit code."""
    point, marker, rest = argv[0], argv[1], argv[2:]
    install(point, marker)
    from reid_ir.engine.launch import launch
    from reid_ir.engine.run import main, parse_args

    return launch(main, parse_args(rest))


def serve() -> None:
    """Fork one training process per request line on stdin (see the module docstring)."""
    import reid_ir.engine.builder  # noqa: F401 - the expensive imports, once
    import reid_ir.engine.run  # noqa: F401
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = run([req["point"], req["marker"], *req["argv"]])
            except BaseException:  # noqa: BLE001 - report anything, then exit
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit(run(sys.argv[1:]))
