"""
The listening lifecycle: listen with errors an administrator can act on,
stop listening and really wait for the socket to close, drain live
connections gracefully, run all of that as a twistd service, and turn a
listening port back into the client description that reaches it::

    port = yield listen("tcp:8080", factory)
    description = clientDescriptionFor(port)  # "tcp:127.0.0.1:8080"
    result = yield gracefulStop(port, 30)   # result.finished, result.closed

The port that L{listen} returns wraps the endpoint's port (as C{wrappedPort})
and knows the L{TrackingFactory} that tracks its connections, which is what
L{gracefulStop} needs.

One story per module:

  - L{endpointkit.lifecycle.listening}: L{listen}, with a deadline for
    endpoints that listen asynchronously;
  - L{endpointkit.lifecycle.diagnosis}: L{ListenError}, and why a listen
    failed (addresses in use, privileged ports, UNIX socket directories,
    path lengths and lock holders read from C{/proc});
  - L{endpointkit.lifecycle.tracking}: L{TrackingFactory}, which knows the
    live connections, and L{TrackedPort};
  - L{endpointkit.lifecycle.stopping}: L{stopListening}, which fires once
    the sockets are closed, and L{stopAll};
  - L{endpointkit.lifecycle.draining}: L{gracefulStop} and L{DrainResult};
  - L{endpointkit.lifecycle.service}: L{EndpointService}, for twistd;
  - L{endpointkit.lifecycle.describing}: L{clientDescriptionFor} and
    L{clientDescriptionsFor}, certificates read for the name to verify.

Every public name is also importable from C{endpointkit} itself.
"""

from endpointkit.lifecycle.describing import (
    CannotDescribePort,
    clientDescriptionFor,
    clientDescriptionsFor,
)
from endpointkit.lifecycle.diagnosis import ListenError
from endpointkit.lifecycle.draining import DrainResult, gracefulStop
from endpointkit.lifecycle.listening import listen
from endpointkit.lifecycle.service import EndpointService
from endpointkit.lifecycle.stopping import stopAll, stopListening
from endpointkit.lifecycle.tracking import TrackedPort, TrackingFactory, TrackingProtocol

__all__ = [
    "CannotDescribePort",
    "DrainResult",
    "EndpointService",
    "ListenError",
    "TrackedPort",
    "TrackingFactory",
    "TrackingProtocol",
    "clientDescriptionFor",
    "clientDescriptionsFor",
    "gracefulStop",
    "listen",
    "stopAll",
    "stopListening",
]
