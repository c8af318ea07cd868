"""A private network namespace for the calling thread, so WebRTC media has a non-loopback address.

Chromium leaves the loopback interface out of ICE and Asterisk builds its candidates from non-loopback
interfaces only, so a browser test needs a real interface. ``isolated_network()`` gives the calling thread
(the pytest main thread, which runs the asyncio loop) its own network namespace with ``lo`` up and a veth
pair whose two ends both stay inside it. Everything the thread starts while inside (Asterisk, baresip, the
Playwright driver and Chromium) and every socket it opens live in that namespace: their ports cannot clash
with anything else on the machine. On exit the thread goes back to the namespace it came from.

Inside, 127.0.0.1 is the namespace's own loopback: reach the machine's PostgreSQL through its unix socket
(``postgresql+asyncpg://postgres@/DBNAME?host=/var/run/postgresql``), which a network namespace does not
hide. Threads that existed before (e.g. the loop's default executor) stay in the original namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from sqlalchemy.engine import make_url

CLONE_NEWNET = 0x40000000  # <linux/sched.h>

# Python 3.11 has neither os.unshare nor os.setns (both came in 3.12): call libc directly.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


class NetworkNamespaceError(OSError):
    """The namespace could not be created, set up or left."""


def thread_namespace() -> str:
    """The calling thread's network namespace, e.g. ``net:[4026531840]`` (equal strings = same namespace)."""
    return os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise NetworkNamespaceError(code, f"{what}: {os.strerror(code)}")


def _ip_batch(commands: list[str]) -> None:
    # One `ip -batch` process instead of one per command; it runs in the new namespace because a child
    # inherits the namespaces of the thread that forks it.
    result = subprocess.run(
        ["ip", "-batch", "-"], input="\n".join(commands) + "\n", capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise NetworkNamespaceError(errno.EIO, f"ip -batch failed: {result.stderr.strip()}")


@contextmanager
def _private_executor() -> Iterator[None]:
    """Executor threads inherit the network namespace of the thread that starts them, and outlive
    this block: one started inside (aiohttp resolving a host name, say) would later serve a test
    outside, whose TCP to 127.0.0.1 would then reach the namespace's own loopback. So the running
    loop (if any) gets a private executor inside and a fresh one, started outside, afterwards."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        yield
        return
    inside = ThreadPoolExecutor(thread_name_prefix="netns")
    loop.set_default_executor(inside)
    try:
        yield
    finally:
        loop.set_default_executor(ThreadPoolExecutor())
        inside.shutdown(wait=False)


@contextmanager
def isolated_network(prefix: str = "10.99.0") -> Iterator[str]:
    """Move the calling thread into a new network namespace; yield the address to bind media to.

    The namespace has ``lo`` up and a veth pair ``cti0`` (``{prefix}.1/24``) / ``cti1`` (``{prefix}.2/24``),
    both ends up and inside it; the yielded address is ``{prefix}.1``. Needs CAP_SYS_ADMIN (root here).
    Stop what you started inside before leaving: a process or socket left behind keeps the namespace
    (and its ports) alive after the thread has returned to the original namespace.
    """
    tid = threading.get_native_id()
    # Opened before unshare: the only handle back to where this thread came from.
    original = os.open(f"/proc/self/task/{tid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        original_name = thread_namespace()
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _ip_batch(
                [
                    "link set lo up",
                    "link add cti0 type veth peer name cti1",
                    f"addr add {prefix}.1/24 dev cti0",
                    f"addr add {prefix}.2/24 dev cti1",
                    "link set cti0 up",
                    "link set cti1 up",
                ]
            )
            with _private_executor():
                yield f"{prefix}.1"
        finally:
            _check(_libc.setns(original, CLONE_NEWNET), "setns back to the original network namespace")
            if thread_namespace() != original_name:
                raise NetworkNamespaceError(errno.EINVAL, "thread did not return to its original network namespace")
    finally:
        os.close(original)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (bound and released), for a server started inside."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def unix_socket_url(tcp_url: str) -> str:
    """The same PostgreSQL database through /var/run/postgresql: inside the namespace 127.0.0.1 is
    the namespace's own loopback, but the machine's unix socket is still reachable."""
    url = make_url(tcp_url)
    return f"postgresql+asyncpg://{url.username or 'postgres'}@/{url.database}?host=/var/run/postgresql"
