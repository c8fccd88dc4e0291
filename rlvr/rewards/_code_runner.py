"""Runs one model-written program and its tests inside the sandbox process (`rlvr.rewards.code`).

Started by the parent as `python -I -B _code_runner.py` in a throw-away working directory, with an
empty environment, in a session of its own. It imports only the standard library. Before any
untrusted code runs it:

1. reads its request from stdin (program, tests, limits, a random nonce, the result descriptor);
2. lowers its resource limits: CPU seconds, address space, file size, open files, no core dumps;
3. moves into a new, empty network namespace where the kernel allows it (unshare through libc);
4. installs an audit hook (PEP 578) that refuses, with PermissionError: creating processes (fork,
   exec, spawn, subprocess, os.system), signalling, sockets and DNS, ctypes, writes / deletes /
   renames outside the working directory, and reading /proc (other processes' environments).

Then it executes the program and each test in one namespace, and reports each outcome as a line
"<nonce> pass|fail <i> <reason>" on the result descriptor. The nonce is a random string the
program is not given, so printing "pass" lines cannot forge a result (a program that searched the
process's memory could find it); a program that exits early reports nothing, which fails.

This is a best-effort sandbox for model-written code in RL training, not a security boundary
against a determined attacker: run untrusted code at scale inside a container or VM as well.
"""

import json
import os
import sys


def _limits(limits):
    import resource

    mb = 1024 * 1024
    for name, value in (("RLIMIT_CPU", limits["cpu_s"]), ("RLIMIT_AS", limits["memory_mb"] * mb),
                        ("RLIMIT_FSIZE", limits["file_mb"] * mb), ("RLIMIT_NOFILE", 64), ("RLIMIT_CORE", 0)):
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            soft, hard = resource.getrlimit(which)
            value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _isolate_network():
    """True when the process now lives in an empty network namespace (no interface but a down loopback)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        clone_newuser, clone_newnet = 0x10000000, 0x40000000
        for flags in (clone_newnet, clone_newuser | clone_newnet):
            if libc.unshare(flags) == 0:
                return True
    except Exception:  # noqa: BLE001 - the audit hook still refuses sockets
        pass
    return False


_BLOCKED_EVENTS = {
    "os.fork": "creating processes", "os.forkpty": "creating processes", "os.exec": "creating processes",
    "os.posix_spawn": "creating processes", "os.spawn": "creating processes", "os.system": "creating processes",
    "subprocess.Popen": "creating processes", "pty.spawn": "creating processes",
    "os.kill": "signalling processes", "os.killpg": "signalling processes",
    "socket.__new__": "network access", "socket.connect": "network access", "socket.bind": "network access",
    "socket.getaddrinfo": "network access", "socket.gethostbyname": "network access",
    "socket.sendto": "network access",
    "ctypes.dlopen": "ctypes", "ctypes.dlsym": "ctypes", "ctypes.cdata": "ctypes",
    "sys.addaudithook": "changing the sandbox", "os.chdir": "leaving the working directory",
    "os.chroot": "leaving the working directory",
}
_PATH_EVENTS = {"os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown", "os.link",
                "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
_READABLE_PROC = ("/proc/self/stat", "/proc/self/status", "/proc/meminfo", "/proc/cpuinfo")


def _hook_factory(root):
    root = os.path.realpath(root)

    def inside(path):
        try:
            real = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else ".")
        except (TypeError, ValueError):
            return False
        return real == root or real.startswith(root + os.sep)

    def hook(event, args):
        if event in _BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {_BLOCKED_EVENTS[event]} is not allowed ({event})")
        if event == "open":
            path, mode, flags = (list(args) + [None, None, 0])[:3]
            if isinstance(path, int):
                return
            text = os.fsdecode(path)
            if text.startswith("/proc/") and not text.startswith(_READABLE_PROC):
                raise PermissionError(f"sandbox: reading {text} is not allowed")
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {text} (outside the working directory) is not allowed")
        elif event in _PATH_EVENTS:
            for path in args:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
                    raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")

    return hook


def _run(request):
    nonce, out = request["nonce"], os.fdopen(request["result_fd"], "w", buffering=1)
    _limits(request["limits"])
    network_isolated = _isolate_network()
    out.write(f"{nonce} info network_isolated={int(network_isolated)}\n")
    program, tests = request["program"], request["tests"]
    del request
    sys.addaudithook(_hook_factory(os.getcwd()))
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(program, "program.py", "exec"), namespace)
    except BaseException as e:  # noqa: BLE001 - the program's own failure fails every test
        reason = f"program raised {type(e).__name__}: {e}"[:300].replace("\n", " ")
        for i in range(len(tests)):
            out.write(f"{nonce} fail {i} {reason}\n")
        return
    for i, test in enumerate(tests):
        try:
            exec(compile(test, f"test_{i}.py", "exec"), namespace)
        except BaseException as e:  # noqa: BLE001 - a failed assertion, an error, SystemExit, ...
            reason = f"{type(e).__name__}: {e}"[:300].replace("\n", " ")
            out.write(f"{nonce} fail {i} {reason}\n")
        else:
            out.write(f"{nonce} pass {i}\n")


if __name__ == "__main__":
    _request = json.loads(sys.stdin.read())
    sys.stdin.close()
    _run(_request)
    for _stream in (sys.stdout, sys.stderr):
        try:
            _stream.flush()
        except Exception:  # noqa: BLE001 - a program that closed or replaced its streams
            pass
    # os._exit: no atexit handlers or finalizers of the program run after its results are written
    os._exit(0)
