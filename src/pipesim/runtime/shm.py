"""Messages between ranks of one machine through shared memory, instead of gloo's sockets.

On one machine a gloo message is a socket write by the sender, then a wake-up of the receiver's
event-loop thread, then one of the waiting rank; on a virtual machine waking an idle CPU costs
tens of microseconds each time (``benchmarks/RESULTS.md``). Here each receiving rank owns one
shared file per channel (src -> dst) holding every message of that channel at a layout both
sides compute from the boundary shapes. The sender copies its tensors in and then raises the
message's sequence number; the receiver polls that number and uses the tensors in place (they
are its receive buffers, reused every step like gloo's); at the end of its step it raises the
message's acknowledgement, which the sender waits for before it writes the message again.

How a receiver waits depends on the machine. With a core per rank it polls, yielding the CPU
between reads (``sched_yield`` returns at once when nothing else wants the core), and sees its
message within microseconds. When ranks outnumber the cores (``sleep``) it polls briefly, then
sleeps on the sequence number (a futex; the sender wakes it only if it says it sleeps): a
polling rank would look busy to the kernel, which would then leave two computing ranks on one
core while the waiting ones hold the other.
Only on x86-64, whose stores become visible in program order (a lock operation between the data
and the sequence number keeps non-temporal copies in order too); elsewhere, and across
machines, gloo carries every message. ``PIPESIM_SHM=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pipesim import transport

_LINE = 64  # bytes: control words sit on their own cache lines
# int64 indices of a message's control words: the sender's sequence number and whether the
# receiver sleeps on it (one line), the receiver's acknowledgement (the next line)
_SENT, _SLEEPING, _ACKED = 0, 1, _LINE // 8
_CONTROL = 2 * _LINE
_fence = threading.Lock()
_SYS_FUTEX, _FUTEX_WAIT, _FUTEX_WAKE = 202, 0, 1  # x86-64; shared (not private) futexes
_POLLS = 32  # a sleeping-mode receiver polls this often before it sleeps


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_NAP = _Timespec(0, 20_000_000)  # a sleeping receiver looks again at least every 20 ms
_libc = ctypes.CDLL(None, use_errno=True)


def supported() -> bool:
    """Whether this process may use shared-memory messages at all."""
    return transport.local_transport() == "shm"


def _align(n: int) -> int:
    return -(-n // _LINE) * _LINE


Shapes = Sequence[tuple[tuple[int, ...], torch.dtype]]  # one message's members


def layout(messages: Sequence[Shapes]) -> tuple[list[tuple[int, list[int]]], int]:
    """Per message, its control block's byte offset and each member's; the file's size.

    The first line holds the owner's token, which an attaching sender checks."""
    at, out = _LINE, []
    for members in messages:
        control, at = at, at + _CONTROL
        offsets = []
        for shape, dtype in members:
            offsets.append(at)
            at = _align(at + math.prod(shape) * dtype.itemsize)
        out.append((control, offsets))
    return out, max(at, _LINE)


@dataclass
class Slot:
    """One message's place in a channel file: control words and the member tensors."""

    control: memoryview  # int64 words, this message's control block
    tensors: tuple[torch.Tensor, ...]
    what: str  # for errors: "rank 1 -> rank 2, 0F3 -> 1F3"
    address: int  # of the sequence number's low 32 bits (the futex word)


class Channel:
    """One mapped channel file and its slots, in the order of ``messages``."""

    def __init__(self, buf: mmap.mmap, messages: Sequence[Shapes], names: Sequence[str]) -> None:
        self.buf = buf
        places, _ = layout(messages)
        words = memoryview(buf).cast("q")
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        self.slots = [
            Slot(words[control // 8:(control + _CONTROL) // 8],
                 tuple(torch.frombuffer(buf, dtype=dtype, count=math.prod(shape), offset=off)
                       .view(shape) for (shape, dtype), off in zip(members, offsets, strict=True)),
                 name, base + control)
            for members, (control, offsets), name in zip(messages, places, names, strict=True)]
        self.token = words[0]


def path(token: int, src: int) -> str:
    return os.path.join(transport.SHM_DIR, f"pipesim-{token:016x}-{src}")


def create(token: int, src: int, messages: Sequence[Shapes], names: Sequence[str]
           ) -> Channel | None:
    """The receiver's side: a new channel file from ``src``, its space reserved (None if the
    shared-memory file system cannot hold it, or refuses)."""
    _, size = layout(messages)
    name = path(token, src)
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return None
    try:
        os.posix_fallocate(fd, 0, size)  # ENOSPC here, not SIGBUS at the first write
        buf = mmap.mmap(fd, size)
    except OSError:
        os.unlink(name)
        return None
    finally:
        os.close(fd)
    words = memoryview(buf).cast("q")
    words[0], words[1] = token, os.getpid()  # who made it, for ``sweep``
    return Channel(buf, messages, names)


def attach(token: int, src: int, messages: Sequence[Shapes], names: Sequence[str]
           ) -> Channel | None:
    """The sender's side: the receiver's channel file, if this machine has it (same size and
    token); None means another machine, or no file: use gloo."""
    _, size = layout(messages)
    try:
        fd = os.open(path(token, src), os.O_RDWR)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size != size:
            return None
        buf = mmap.mmap(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)
    channel = Channel(buf, messages, names)
    return channel if channel.token == token else None


def remove(token: int, src: int) -> None:
    """Drop a channel file's name (both sides keep their mapping)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(token, src))


def new_token() -> int:
    """A random positive int64 naming this rank's channel files (first ``sweep``s)."""
    sweep()
    return int.from_bytes(os.urandom(8), "little") >> 1 or 1


STALE = 10.0  # seconds: a channel file's name lives for a set-up's milliseconds, not this long


def sweep(directory: str | None = None) -> list[str]:
    """Remove the names of channel files whose maker is gone; the names removed.

    A name lives from its file's creation until both ranks have mapped it, a few
    milliseconds of set-up; a rank killed in between (Ctrl-C, a failing job's other ranks
    being stopped) leaves it behind. Here a name older than ``STALE`` seconds whose maker
    (the process id in its header) no longer exists goes. Files of other processes alive,
    of old versions (no process id) and anything unreadable stay.
    """
    directory = directory or transport.SHM_DIR
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(directory) if n.startswith("pipesim-")]
    except OSError:
        return removed
    now = time.time()
    for name in names:
        full = os.path.join(directory, name)
        try:
            if now - os.stat(full).st_mtime < STALE:
                continue
            with open(full, "rb") as fh:
                head = fh.read(16)
            pid = int.from_bytes(head[8:16], "little") if len(head) == 16 else 0
            if pid <= 0 or _alive(pid):
                continue
            os.unlink(full)
            removed.append(name)
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def put(slot: Slot, payload: Sequence[torch.Tensor], seq: int, timeout: float) -> None:
    """Write step ``seq``'s message: once the receiver is done with step seq-1's."""
    _wait(slot, _ACKED, seq - 1, timeout, "to release")
    for dst, t in zip(slot.tensors, payload, strict=True):
        dst.copy_(t)
    with _fence:  # the data before the sequence number, also after non-temporal stores
        slot.control[_SENT] = seq
    # the lock's release is a full barrier: the number is visible before this read
    if slot.control[_SLEEPING]:
        _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(slot.address), _FUTEX_WAKE, 1, None, None, 0)


def get(slot: Slot, seq: int, timeout: float, sleep: bool = False) -> tuple[torch.Tensor, ...]:
    """Step ``seq``'s message, in place; call ``release`` when the step is done with it.
    ``sleep``: ranks share cores; poll a little, then sleep until the sender wakes us."""
    if sleep:
        _sleep_until(slot, seq, timeout)
    else:
        _wait(slot, _SENT, seq, timeout, "to arrive")
    return slot.tensors


def arrived(slot: Slot, seq: int) -> bool:
    return bool(slot.control[_SENT] >= seq)


def release(slot: Slot, seq: int) -> None:
    slot.control[_ACKED] = seq


def _wait(slot: Slot, word: int, value: int, timeout: float, why: str) -> None:
    control = slot.control
    if control[word] >= value:
        return
    start, polls = time.monotonic(), 0
    while control[word] < value:
        os.sched_yield()
        polls += 1
        if polls % 1024 == 0 and time.monotonic() - start > timeout:
            raise TimeoutError(f"waited {timeout:g} s for message {slot.what} {why}")


def _sleep_until(slot: Slot, seq: int, timeout: float) -> None:
    control = slot.control
    for _ in range(_POLLS):
        if control[_SENT] >= seq:
            return
        os.sched_yield()
    start = time.monotonic()
    while True:
        control[_SLEEPING] = 1
        with _fence:  # a full barrier: the flag is visible before the number is read again
            seen = control[_SENT]
        if seen >= seq:
            break
        # sleeps only while the word still holds ``seen`` (else returns at once)
        _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(slot.address), _FUTEX_WAIT,
                      ctypes.c_uint32(seen & 0xFFFFFFFF), ctypes.byref(_NAP), None, 0)
        if time.monotonic() - start > timeout:
            control[_SLEEPING] = 0
            raise TimeoutError(f"waited {timeout:g} s for message {slot.what} to arrive")
    control[_SLEEPING] = 0


__all__ = ["Channel", "Slot", "arrived", "attach", "create", "get", "layout", "new_token", "put",
           "release", "remove", "supported", "sweep"]
