"""Nothing reaches the network at run time: the demo, ``ns-train pixelsplat`` and
``pixelsplat-ns evaluate`` run to the end with outgoing connections made impossible.

Two layers, because each proves something the other cannot:

* a socket guard (a ``sitecustomize.py`` on ``PYTHONPATH``, so it is loaded by every Python
  process the command starts, data-loader workers included) records every attempt to reach a
  non-local address (connect, UDP send, name lookup) to a file and refuses it. It is what
  *records*: a program that catches the error and carries on (an update check, a download
  with a fallback) still leaves a line in the file, and the test fails on it;
* where this machine allows it, the command also runs in its own user + network namespace
  (``unshare -rn``) with only the loopback interface: there is no route out, so not even code
  that bypasses Python's ``socket`` module (a C library, a child process) can connect.

Allowed: Unix-domain sockets (never leave the machine; Python's multiprocessing and the
tensorboard writer's processes may use them) and loopback addresses (127.0.0.0/8, ::1,
``localhost``, the wildcard address, this machine's own host name: a local server such as the
viewer's, or a library asking "who am I", reaches nothing outside). Logging every call showed
that today none of the three commands makes any IP connection or name lookup at all, local or
not; allowing loopback keeps the test about the *network*, not about how the program talks to
itself (e.g. a future run with the viewer on).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from pixelsplat_ns.cli.demo import DEMO_CONTEXT, DEMO_SCENE

BIN = Path(sys.executable).parent
LOG_VARIABLE = "PIXELSPLAT_NS_NETWORK_LOG"
GUARDED_VARIABLE = "PIXELSPLAT_NS_GUARDED_LOG"

# Loaded by every Python process of the command (site imports ``sitecustomize`` at start-up).
GUARD = '''"""Written by tests/test_no_network.py: record and refuse any attempt to reach a non-local address."""
import errno
import ipaddress
import os
import socket
import sys
import traceback

_LOG = os.environ["PIXELSPLAT_NS_NETWORK_LOG"]
_HOSTNAME = socket.gethostname()
_INET = (socket.AF_INET, socket.AF_INET6)

with open(os.environ["PIXELSPLAT_NS_GUARDED_LOG"], "a") as _file:  # proof that the guard was loaded here
    _file.write(f"{os.getpid()} {sys.argv!r}\\n")


def _is_local(host):
    if host is None:  # getaddrinfo(None, port): the wildcard or loopback address
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).split("%")[0]
    if host.lower() in ("", "localhost", "localhost.localdomain", _HOSTNAME.lower()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name other than ours: resolving it may ask a DNS server
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what, target):
    stack = "".join(traceback.format_stack(limit=12)[:-2])
    with open(_LOG, "a") as log:
        log.write(f"pid {os.getpid()} {sys.argv[:2]!r}: {what} {target!r}\\n{stack}\\n")
    raise OSError(errno.ENETUNREACH, f"network access is refused in this test: {what} {target!r}")


def _check(sock, address, what):
    if sock.family in _INET and isinstance(address, tuple) and not _is_local(address[0]):
        _refuse(what, address)


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


def connect(self, address):
    _check(self, address, "connect")
    return _connect(self, address)


def connect_ex(self, address):
    _check(self, address, "connect_ex")
    return _connect_ex(self, address)


def sendto(self, data, *args):
    _check(self, args[-1], "sendto")  # sendto(data, address) or sendto(data, flags, address)
    return _sendto(self, data, *args)


def _lookup(name, original):
    def guarded(host, *args, **kwargs):
        if not _is_local(host):
            _refuse(name, host)
        return original(host, *args, **kwargs)

    return guarded


socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
    setattr(socket, _name, _lookup(_name, getattr(socket, _name)))
'''


@lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...]:
    """``unshare -rn`` with loopback up, if this machine allows unprivileged namespaces and has
    ``ip`` (loopback starts down in a new namespace); else (): the guard alone."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return ()
    try:
        if subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=30).returncode != 0:
            return ()
    except (OSError, subprocess.TimeoutExpired):
        return ()
    # Loopback up, so that only off-machine traffic is impossible, as the guard's rules say.
    return (unshare, "-rn", "sh", "-c", f'{shlex.quote(ip)} link set lo up && exec "$@"', "sh")


class Offline:
    """Runs commands with the guard installed and, when possible, inside a network namespace."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitecustomize.py").write_text(GUARD)
        self.log, self.guarded = folder / "refused.log", folder / "guarded.log"
        path = os.pathsep.join(filter(None, (str(folder), os.environ.get("PYTHONPATH"))))
        self.env = {**os.environ, "PYTHONPATH": path, LOG_VARIABLE: str(self.log), GUARDED_VARIABLE: str(self.guarded)}

    def run(self, *command: str, timeout: float = 900) -> subprocess.CompletedProcess:
        self.log.write_text("")  # each command starts with empty records
        self.guarded.write_text("")
        return subprocess.run(
            [*namespace_prefix(), *command], capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def check(self, result: subprocess.CompletedProcess, program: str) -> None:
        """The command succeeded, the guard was loaded in it, and nothing tried to go out."""
        output = (result.stdout[-3000:] + result.stderr[-3000:]).strip()
        assert result.returncode == 0, output
        assert program in self.guarded.read_text(), f"the guard was not loaded in {program}"
        refused = self.log.read_text()
        assert refused == "", f"{program} tried to reach the network:\n{refused}"


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Offline:
    return Offline(tmp_path_factory.mktemp("guard"))


def test_the_guard_records_and_refuses_and_the_namespace_has_no_route_out(offline: Offline):
    """A guard that never fires would prove nothing: an outgoing connection is recorded and refused,
    a local one is not; and inside the namespace even a raw socket cannot leave."""
    attempt = (
        "import socket\n"
        "for target in (('93.184.215.14', 80), ('example.com', 80)):\n"
        "    try:\n"
        "        socket.create_connection(target, timeout=5)\n"
        "    except OSError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('connected to ' + repr(target))\n"
        "with socket.socket() as server:\n"
        "    server.bind(('127.0.0.1', 0))\n"
        "    server.listen()\n"
        "    socket.create_connection(server.getsockname(), timeout=5).close()\n"  # loopback works
    )
    result = offline.run(sys.executable, "-c", attempt, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    refused = offline.log.read_text()
    assert "93.184.215.14" in refused and "example.com" in refused and "127.0.0.1" not in refused
    if namespace_prefix():
        raw = "import _socket\ns = _socket.socket()\ns.settimeout(5)\ns.connect(('93.184.215.14', 80))"
        result = offline.run(sys.executable, "-c", raw, timeout=60)
        assert result.returncode != 0 and "unreachable" in result.stderr.lower(), result.stderr[-2000:]


def test_demo_runs_offline(offline: Offline, tmp_path: Path):
    result = offline.run(str(BIN / "pixelsplat-ns"), "demo", "--output-dir", str(tmp_path / "demo"))
    offline.check(result, "pixelsplat-ns")
    assert "pixelsplat demo done" in result.stdout


def test_ns_train_runs_offline(offline: Offline, tmp_path: Path):
    result = offline.run(
        str(BIN / "ns-train"), "pixelsplat",
        "--data", str(DEMO_SCENE),
        "--output-dir", str(tmp_path / "outputs"),
        "--max-num-iterations", "0",
        "--vis", "tensorboard",  # no viewer: it would serve (locally) until killed
        "--viewer.quit-on-train-completion", "True",
        "--pipeline.datamanager.context-views", *DEMO_CONTEXT,
        "nerfstudio-data", "--eval-mode", "filename",  # the dataparser subcommand comes last
    )  # fmt: skip
    offline.check(result, "ns-train")
    assert len(list((tmp_path / "outputs").rglob("config.yml"))) == 1


def test_evaluate_runs_offline(offline: Offline, tmp_path: Path):
    from tests.test_data_chunks import synthetic_item, write_chunk

    write_chunk(tmp_path / "data" / "test" / "000000.torch", [synthetic_item("alpha", 4, seed=1)])
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"alpha": {"context": [0, 3], "target": [1, 2]}}))
    # LPIPS stays at its default (VGG): its ImageNet weights are where a download would
    # happen; without them on disk it is skipped with a warning, never fetched.
    result = offline.run(
        str(BIN / "pixelsplat-ns"), "evaluate", "--data", str(tmp_path / "data"), "--index", str(index),
        "--output", str(tmp_path / "results.json"), "--image-shape", "16", "16",
    )  # fmt: skip
    offline.check(result, "pixelsplat-ns")
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["targets"] == 2
