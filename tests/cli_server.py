"""A fork server for command-line tests (run as `python tests/cli_server.py MODULE...`).

It imports the given modules once (torch, Hydra and the package: about 3.5 s of every `python -m` start), then for
each request, one JSON line `{"module", "args", "cwd"}` on stdin, forks a child that runs `python -m module args`
as a fresh interpreter would: `runpy` executes the module as `__main__` with `sys.argv` set, in `cwd`, its output in
files; an uncaught exception prints its traceback and exits 1, `SystemExit` gives its status, exit handlers run.
The reply is one JSON line `{"rc", "stdout", "stderr"}`. The server itself never computes (a fork after torch's
thread pools start could deadlock): it only imports, forks and waits. The entry modules themselves must not be in
the warm list (runpy warns when the module it runs is already imported); their imports are what is worth warming.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import sys
import tempfile
import traceback


def _child(request: dict, out_fd: int, err_fd: int) -> None:
    code = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.chdir(request["cwd"])
        sys.argv = [request["module"], *request["args"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # sys.exit("message"): printed to stderr, status 1, as the interpreter does
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    for module in sys.argv[1:]:
        importlib.import_module(module)
    replies = os.fdopen(os.dup(1), "w")
    print("ready", file=replies, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, out.fileno(), err.fileno())
            _, status = os.waitpid(pid, 0)
            out.seek(0)
            err.seek(0)
            reply = {
                "rc": os.waitstatus_to_exitcode(status),
                "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace"),
            }
        print(json.dumps(reply), file=replies, flush=True)


if __name__ == "__main__":
    serve()
