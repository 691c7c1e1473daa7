"""
C{multi:} -- listen on several server descriptions at once, as one
listening port::

    multi:tcp\\:8080\\:interface=0.0.0.0:tcp6\\:8080\\:interface=\\\\\\:\\\\\\::unix\\:/run/app.sock

or, from Python::

    buildDescription("multi", buildDescription("tcp", 8080, interface="0.0.0.0"),
                     buildDescription("tcp6", 8080, interface="::"),
                     buildDescription("unix", "/run/app.sock"))

Each member is one escaped positional argument.  Listening is all or
nothing: the members listen together, and if any fails, those already
listening are stopped (and their sockets closed) before the failure is
reported; the L{MultiListenError} names the description that failed and why.
It is a L{CannotListenError} (as L{endpointkit.ListenError} is), with the
failed member's interface, port and socket error, so callers catch one
type.  The combined port's C{stopListening} stops every member (with
L{endpointkit.stopListening}, so it fires when all their sockets are
closed).  Its C{ports} attribute lists the member ports in description
order and C{getHost} returns the first member's address (C{getHosts} all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._grammar import DescriptionError
from endpointkit._kinds import Nested
from endpointkit._schema import Arg, EndpointType, Parsed
from endpointkit.lifecycle.stopping import Outcome, forgetStop, stopAll

__all__ = ["MultiListenError", "MultiPort", "MultiServerEndpoint", "multiType"]

_log = Logger()


class MultiListenError(CannotListenError):
    """
    One member of a C{multi:} description could not listen; every other
    member was stopped before this was reported.

    A L{CannotListenError}: C{interface}, C{port} and C{socketError} are
    the failed member's when its failure was one too (otherwise C{port} is
    its description and C{socketError} its exception).

    @ivar index: position of the failed member, from 0.
    @ivar description: its description (secrets masked) or endpoint repr.
    @ivar reason: the member's own failure.
    @ivar others: how many further members failed too.
    """

    def __init__(self, index: int, description: str, reason: Failure, others: int = 0) -> None:
        member = reason.value
        if isinstance(member, CannotListenError):
            CannotListenError.__init__(  # type: ignore[no-untyped-call]
                self, member.interface, member.port, member.socketError)
        else:
            CannotListenError.__init__(self, None, description, member)  # type: ignore[no-untyped-call]
        self.index = index
        self.description = description
        self.reason = reason
        self.others = others
        more = f" (and {others} other member{'s' if others != 1 else ''})" if others else ""
        self.message = (f"multi: member {index + 1} ({description}) cannot listen: "
                        f"{reason.getErrorMessage()}{more}; no member is listening")

    def __str__(self) -> str:
        return self.message


@implementer(IListeningPort)
class MultiPort:
    """
    Several listening ports as one.

    @ivar ports: the member ports, in the order of their descriptions.
    @ivar descriptions: the members' descriptions (secrets masked).
    """

    def __init__(self, ports: Sequence[IListeningPort], descriptions: Sequence[str]) -> None:
        self.ports: list[Any] = list(ports)
        self.descriptions = list(descriptions)
        self._stopping: Outcome | None = None

    def __repr__(self) -> str:
        return f"<MultiPort of {len(self.ports)}: {', '.join(map(repr, self.ports))}>"

    def startListening(self) -> None:
        """
        Start every member again after L{stopListening}; if one cannot, the
        ones started here are stopped again and L{MultiListenError} raised.
        """
        started: list[Any] = []
        for index, port in enumerate(self.ports):
            try:
                port.startListening()
            except Exception:
                failure = Failure()  # type: ignore[no-untyped-call]
                stopAll(started).addErrback(
                    lambda f: _log.failure("multi: stopping a member failed", f))
                raise MultiListenError(index, self.descriptions[index], failure) from None
            # Listening again: the next stop stops it anew.
            forgetStop(port)
            started.append(port)
        self._stopping = None

    def stopListening(self) -> defer.Deferred[None]:
        """
        Stop every member; the Deferred fires when all of them are closed
        (with the first failure, if stopping any failed).  Calling it again
        gives the outcome of the same stop.
        """
        if self._stopping is None:
            self._stopping = Outcome(stopAll(self.ports))
        return self._stopping.follow()

    def getHost(self) -> IAddress:
        """
        The first member's address; see L{getHosts} for all of them.
        """
        host: IAddress = self.ports[0].getHost()
        return host

    def getHosts(self) -> list[IAddress]:
        """
        Every member's address, in description order.
        """
        return [port.getHost() for port in self.ports]


@implementer(IStreamServerEndpoint)
class MultiServerEndpoint:
    """
    Listens on every one of several server endpoints, all or nothing.

    @param descriptions: how to name each endpoint in errors (default: its
        repr).
    """

    def __init__(self, endpoints: Sequence[IStreamServerEndpoint],
                 descriptions: Sequence[str] | None = None) -> None:
        if not endpoints:
            raise ValueError("MultiServerEndpoint needs at least one endpoint")
        self.endpoints: list[Any] = list(endpoints)
        self.descriptions = (list(descriptions) if descriptions is not None
                             else [repr(e) for e in self.endpoints])
        if len(self.descriptions) != len(self.endpoints):
            raise ValueError("one description per endpoint")

    def __repr__(self) -> str:
        return f"<MultiServerEndpoint {' + '.join(self.descriptions)}>"

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """
        Listen on every endpoint with the same factory.  If any fails, stop
        the others, wait until they are closed, then fail with
        L{MultiListenError}.  Cancelling stops whatever already listens.
        """
        pending: list[defer.Deferred[Any]] = [
            defer.maybeDeferred(endpoint.listen, protocolFactory) for endpoint in self.endpoints]

        cancelled: list[bool] = []

        def cancel(d: defer.Deferred[Any]) -> None:
            cancelled.append(True)
            for member in pending:
                member.cancel()

        result: defer.Deferred[Any] = defer.Deferred(cancel)

        def stopFailed(f: Failure) -> None:
            _log.failure("multi: stopping a member after a failed listen failed", f)

        def gathered(results: list[tuple[bool, Any]]) -> None:
            failed = [(i, value) for i, (ok, value) in enumerate(results) if not ok]
            ports = [value for ok, value in results if ok]
            if cancelled or result.called:
                # Cancelled: nothing may stay listening.
                stopAll(ports).addErrback(stopFailed)
                return
            if not failed:
                result.callback(MultiPort(ports, self.descriptions))
                return
            index, failure = failed[0]
            error = MultiListenError(index, self.descriptions[index], failure, len(failed) - 1)

            def report(ignored: object) -> None:
                if not result.called:
                    result.errback(error)

            stopAll(ports).addErrback(stopFailed).addCallback(report)

        defer.DeferredList(pending, consumeErrors=True).addCallback(gathered)
        return result


def _build(reactor: Any, parsed: Parsed) -> MultiServerEndpoint:
    members: tuple[Parsed, ...] = parsed.values["endpoints"]
    endpoints = []
    for member in members:
        try:
            endpoints.append(member.build(reactor))
        except DescriptionError as e:
            raise e.nestedIn("multi", "endpoints") from None
    return MultiServerEndpoint(endpoints, [member.description(masked=True) for member in members])


multiType = EndpointType(
    "multi", "server",
    (
        Arg("endpoints", Nested("server"),
            help="server descriptions to listen on together, each one escaped "
            "positional argument", variadic=True),
    ),
    "several server descriptions as one listening port, all or nothing "
    "(e.g. IPv4 + IPv6 + a UNIX socket); getHost is the first member's address",
    build=_build,
)
