"""`keras-dp launch --isolate`: the workers in a private network namespace holding only `lo`.

See docs/security.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct
import threading

from keras_dp.errors import KerasDPError

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_REFUSED = {errno.EPERM: "unshare() was not permitted: unprivileged user namespaces are "
                         "disabled or a security profile forbids them",
            errno.EINVAL: "the kernel does not support these namespaces",
            errno.ENOSPC: "the limit of user namespaces is reached (user.max_user_namespaces)",
            errno.EUSERS: "the limit of nested user namespaces is reached",
            errno.ENOMEM: "the kernel could not allocate the namespace"}


class IsolationUnavailable(KerasDPError, RuntimeError):
    """This machine does not let the launcher create a private network namespace."""

    exit_code = 2


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _unavailable(why: str) -> IsolationUnavailable:
    return IsolationUnavailable(
        f"--isolate: this machine does not let keras-dp launch create a private network "
        f"namespace ({why}). Fix: run as root; or allow unprivileged user namespaces "
        f"(sysctl user.max_user_namespaces=15000, and on Debian/Ubuntu "
        f"kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0; "
        f"in a container, a seccomp/AppArmor profile that permits unshare); or leave --isolate "
        f"out and fence the workers' ports as the README's Security section says. "
        f"Received: --isolate=True")


def enter_private_network() -> str:
    """Moves this process into a new network namespace holding only loopback (up).

    Call it before starting the workers (they inherit it), in a process that exists for the
    launch: the process stays in the namespace.

    Returns:
        `"network namespace"` (root) or `"user and network namespace"`.

    Raises:
        IsolationUnavailable: the kernel refused (why, and what to do), or this is not Linux.
    """
    if not hasattr(os, "geteuid") or not os.path.exists("/proc/self/ns/net"):
        raise _unavailable("network namespaces are a Linux feature")
    uid, gid = os.geteuid(), os.getegid()
    how = "network namespace"
    try:
        try:
            if uid != 0:
                raise PermissionError(errno.EPERM, "not root")
            _unshare(CLONE_NEWNET)
        except PermissionError:  # not root, or root without CAP_SYS_ADMIN (a container)
            how = "user and network namespace"
            if threading.active_count() > 1:
                raise _unavailable("the process already runs threads; the kernel creates a "
                                   "user namespace only for a single-threaded process") from None
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    except OSError as exc:
        raise _unavailable(_REFUSED.get(exc.errno, f"unshare() failed: {exc.strerror}")) \
            from None
    if how != "network namespace":
        # Map the user to itself, so files are written as the user, as before (no
        # setgroups file before Linux 3.19).
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with contextlib.suppress(FileNotFoundError), \
                    open(f"/proc/self/{name}", "w", encoding="ascii") as handle:
                handle.write(text)
    try:  # a new namespace's loopback starts down
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("16sH", b"lo", 0)
            flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request)[:18])[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))
    except OSError as exc:
        raise _unavailable(f"the new namespace's loopback could not be brought up: "
                           f"{exc.strerror}") from None
    return how
