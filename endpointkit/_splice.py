"""
The zero-copy relay path: bytes move between two kernel sockets with
C{os.splice} through a pipe per direction, driven by the reactor's readiness,
and never enter Python.

The sockets are taken out of their Twisted transports for the length of the
relay (the transports stop reading and writing; small descriptors of ours
watch the same file descriptors), and given back to them to be closed, so
the protocols see an ordinary C{connectionLost} at the end.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorFDSet, IReadWriteDescriptor
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

try:
    from twisted.internet import unix as _unix

    _UNIX: tuple[type, ...] = (_unix.Server, _unix.Client)
except ImportError:  # pragma: no cover - no unix sockets on this platform
    _UNIX = ()

PIPE_SIZE = 1 << 20
"""
The capacity asked for each direction's pipe: at most this many bytes of a
direction sit in the kernel between the two sockets.
"""

_SPLICE = getattr(os, "splice", None)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_SETPIPE = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_GETPIPE = getattr(fcntl, "F_GETPIPE_SZ", 1032)

KERNEL_TRANSPORTS: tuple[type, ...] = (tcp.Server, tcp.Client, *_UNIX)


def spliceAvailable() -> bool:
    """
    Whether this platform has C{os.splice} (Linux, Python 3.10 and later).
    """
    return _SPLICE is not None


def isKernelTransport(transport: object) -> bool:
    """
    Whether C{transport} is a plain TCP or unix socket transport, with no
    TLS or other layer between it and the protocol that was given it, and
    with nothing left in its write buffer.
    """
    if not isinstance(transport, KERNEL_TRANSPORTS):
        return False
    if getattr(transport, "disconnecting", True) or getattr(transport, "disconnected", True):
        return False
    if getattr(transport, "dataBuffer", b"") or getattr(transport, "_tempDataBuffer", None):
        return False
    return getattr(transport, "TLS", False) is False


POOL_SIZE = 64
"""
How many empty pipes a L{PipePool} keeps by default.
"""

_Pipe = tuple[int, int, int]


class PipePool:
    """
    Empty pipes kept for reuse, at most C{size}: a short spliced connection
    then costs no C{pipe2} and C{fcntl} calls.  The owner closes the pool
    (L{close}) when it stops relaying.
    """

    def __init__(self, size: int = POOL_SIZE) -> None:
        self.size = size
        self.pipes: list[_Pipe] = []

    def get(self) -> _Pipe:
        """
        An empty pipe: a kept one, or a new one.
        """
        if self.pipes:
            return self.pipes.pop()
        return _newPipe()

    def put(self, pipe: _Pipe) -> bool:
        """
        Keep the empty C{pipe} if there is room; C{False} when the caller
        should close it.
        """
        if len(self.pipes) >= self.size:
            return False
        self.pipes.append(pipe)
        return True

    def fileDescriptors(self) -> set[int]:
        """
        The descriptors of the pipes kept now.
        """
        return {fd for r, w, _ in self.pipes for fd in (r, w)}

    def close(self) -> None:
        """
        Close every kept pipe.
        """
        pipes, self.pipes = self.pipes, []
        for r, w, _ in pipes:
            _closeFDs(r, w)


def _closeFDs(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _newPipe() -> _Pipe:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, _SETPIPE, PIPE_SIZE)
    except OSError:
        pass
    try:
        size = int(fcntl.fcntl(w, _GETPIPE))
    except OSError:
        size = 65536
    return r, w, size


class _Pump:
    """
    One direction: socket C{source} -> pipe -> socket C{sink}.
    """

    def __init__(self, splicer: Splicer, source: _Side, sink: _Side,
                 count: Callable[[int], None], pool: PipePool | None) -> None:
        self.splicer = splicer
        self.source = source
        self.sink = sink
        self.count = count
        self.pool = pool
        self.pipeRead, self.pipeWrite, self.capacity = (
            pool.get() if pool is not None else _newPipe())
        self.buffered = 0
        self.full = False
        self.eof = False
        self.done = False
        self.dirty = False

    def fill(self) -> None:
        """
        The source is readable: move what it has into the pipe, and on.
        """
        splice = _SPLICE
        assert splice is not None
        while True:
            room = self.capacity - self.buffered
            if room <= 0:
                self.full = True
                break
            try:
                n = splice(self.source.fd, self.pipeWrite, room, None, None, _FLAGS)
            except BlockingIOError:
                # Either the socket is empty or the pipe has no free slot.
                if self.buffered:
                    self.full = True
                break
            except OSError as e:
                self.dirty = True
                self.splicer._sideFailed(self.source, e)
                return
            if n == 0:
                self.eof = True
                break
            self.buffered += n
            self.count(n)
            # Only a splice that filled all the room may have left more in
            # the socket; otherwise the next readiness event will tell.
            if not self.drain(update=False) or n < room:
                break
        self._settle()

    def drain(self, update: bool = True) -> bool:
        """
        Move the pipe's bytes into the sink; C{True} when the pipe is empty.
        """
        splice = _SPLICE
        assert splice is not None
        while self.buffered:
            try:
                n = splice(self.pipeRead, self.sink.fd, self.buffered, None, None, _FLAGS)
            except BlockingIOError:
                break
            except OSError as e:
                self.dirty = True
                self.splicer._sideFailed(self.sink, e)
                return False
            if n == 0:
                break
            self.buffered -= n
            self.full = False
        if update:
            self._settle()
        return not self.buffered

    def _settle(self) -> None:
        if self.done or self.splicer.finished:
            return
        source, sink = self.source, self.sink
        if self.eof and not self.buffered:
            self.done = True
            try:
                sink.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if self.splicer._pumpDone():
                return
            # This direction is over: stop watching the source for reading
            # (at end of stream it stays readable, and each splice returns
            # 0: a busy loop) and the sink for this direction's writes.
            source.update()
            sink.update()
            return
        if source.reading != (not (self.eof or self.full or source.failed)):
            source.update()
        if sink.writing != (bool(self.buffered) and not sink.failed):
            sink.update()

    def discard(self) -> None:
        """
        What the pipe holds will never be delivered: the pipe is not reused.
        """
        self.done = True
        self.eof = True
        self.dirty = self.dirty or bool(self.buffered)
        self.buffered = 0

    def wantsRead(self) -> bool:
        return not (self.eof or self.full or self.done)

    def wantsWrite(self) -> bool:
        return bool(self.buffered) and not self.done

    def close(self) -> None:
        """
        Give the pipe back to the pool when it is empty and the pool has
        room, else close it.
        """
        if self.pipeRead < 0:
            return
        pipe = (self.pipeRead, self.pipeWrite, self.capacity)
        self.pipeRead = self.pipeWrite = -1
        if (self.pool is not None and not self.buffered and not self.dirty
                and self.pool.put(pipe)):
            return
        _closeFDs(pipe[0], pipe[1])


@implementer(IReadWriteDescriptor)
class _Side:
    """
    The reactor's view of one socket while it is spliced: readable moves
    its bytes out, writable moves the other direction's bytes in.
    """

    def __init__(self, splicer: Splicer, transport: Any) -> None:
        self.splicer = splicer
        self.transport = transport
        self.socket: socket.socket = transport.socket
        self.fd = self.socket.fileno()
        self.outgoing: _Pump
        self.incoming: _Pump
        self.reading = False
        self.writing = False
        self.failed = False
        self.gone = False

    def fileno(self) -> int:
        return -1 if self.gone else self.fd

    def logPrefix(self) -> str:
        return "splice"

    def doRead(self) -> None:
        self.outgoing.fill()

    def doWrite(self) -> None:
        self.incoming.drain()

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw a hang-up or error on this socket (and stopped
        # reading it, not writing).
        self.stop()
        if not self.splicer.finished:
            self.splicer._sideFailed(self, reason.value)

    def update(self) -> None:
        reactor = self.splicer.reactor
        if self.gone or self.splicer.finished:
            return
        read = self.outgoing.wantsRead() and not self.failed
        write = self.incoming.wantsWrite() and not self.failed
        if read != self.reading:
            self.reading = read
            (reactor.addReader if read else reactor.removeReader)(self)
        if write != self.writing:
            self.writing = write
            (reactor.addWriter if write else reactor.removeWriter)(self)

    def stop(self) -> None:
        # Also when gone: the reactor finds a descriptor whose fileno() is
        # -1 by identity.
        reactor = self.splicer.reactor
        if self.reading:
            reactor.removeReader(self)
        if self.writing:
            reactor.removeWriter(self)
        self.reading = self.writing = False


class Splicer:
    """
    Relay bytes between two connected kernel-socket transports with
    C{os.splice}, both ways, until both directions have ended.

    @param onBytes: called with C{(direction, count)}, direction 0 for
        C{first} to C{second} and 1 for the reverse, as bytes move.
    @param pool: where the pipes come from and go back to (L{None}: new
        pipes, closed at the end).
    """

    def __init__(self, reactor: IReactorFDSet, first: Any, second: Any,
                 onBytes: Callable[[int, int], None], pool: PipePool | None = None) -> None:
        self.reactor = reactor
        self.finished = False
        self._pumpsDone = 0
        self.a = _Side(self, first)
        self.b = _Side(self, second)
        self.up = _Pump(self, self.a, self.b, lambda n: onBytes(0, n), pool)
        try:
            self.down = _Pump(self, self.b, self.a, lambda n: onBytes(1, n), pool)
        except OSError:
            self.up.close()
            raise
        self.a.outgoing = self.b.incoming = self.up
        self.b.outgoing = self.a.incoming = self.down

    def start(self) -> None:
        """
        Take the sockets from their transports and start moving bytes.
        """
        for side in (self.a, self.b):
            side.transport.stopReading()
            side.transport.stopWriting()
        self.a.update()
        self.b.update()

    def _pumpDone(self) -> bool:
        """
        One direction ended cleanly; C{True} when that was the last, and
        both connections are closed now.
        """
        self._pumpsDone += 1
        if self.up.done and self.down.done:
            self._closeBoth()
            return True
        return False

    def _sideFailed(self, side: _Side, error: BaseException | None) -> None:
        """
        A socket failed (reset, error): the other side is aborted too, so
        that a reset is passed on as a reset (a truncated stream never looks
        complete); what the pipes hold is dropped.
        """
        if self.finished or side.failed:
            return
        side.failed = True
        self.abort()

    def transportGone(self, transport: object, clean: bool = False) -> None:
        """
        A transport was closed by somebody else while spliced: its socket
        is no longer ours to watch.  The other side is closed after what it
        was sent when C{clean} and nothing is left in the pipes, and
        aborted otherwise.
        """
        for side in (self.a, self.b):
            if side.transport is transport:
                side.gone = True
        if clean and not self.buffered():
            self._closeBoth()
        else:
            self.abort()

    def _release(self) -> None:
        self.finished = True
        self.a.stop()
        self.b.stop()
        for pump in (self.up, self.down):
            if not pump.done:
                pump.discard()
            pump.close()

    def _closeBoth(self) -> None:
        if self.finished:
            return
        self._release()
        for side in (self.a, self.b):
            if side.gone:
                continue
            transport = side.transport
            if transport.disconnected:
                continue
            if transport.dataBuffer or transport._tempDataBuffer:
                transport.loseConnection()
                continue
            # Nothing is left to write to this socket.  When both directions
            # have ended, its two ways were shut down here, behind its
            # transport's back: a loseConnection would wait for writability,
            # which the reactor reports for such a socket as a hang-up
            # (ConnectionLost), and the relay would pass that on as a reset.
            # So the transport is closed now, cleanly, as loseConnection
            # closes a descriptor whose writing side is already closed.
            transport.stopReading()
            transport.stopWriting()
            transport.connectionLost(connectionDone)

    def abort(self) -> None:
        """
        Stop now: drop what the pipes hold and abort both connections.
        """
        if self.finished:
            return
        self._release()
        for side in (self.a, self.b):
            if not side.gone:
                side.transport.abortConnection()

    def buffered(self) -> int:
        """
        Bytes held in the pipes now.
        """
        return self.up.buffered + self.down.buffered


def pipeWorks() -> bool:
    """
    Whether a socket can be spliced into a pipe here (a kernel with splice
    and sockets that support it).
    """
    if _SPLICE is None:
        return False
    try:
        left, right = socket.socketpair()
    except OSError:
        return False
    r = w = -1
    try:
        r, w, _ = _newPipe()
        left.send(b"x")
        right.setblocking(False)
        return bool(_SPLICE(right.fileno(), w, 1, flags=_FLAGS) == 1)
    except OSError as e:
        return e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EPERM)
    finally:
        left.close()
        right.close()
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
