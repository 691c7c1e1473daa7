"""
The twistd plugin C{endpointkit-relay}: C{twistd -n endpointkit-relay
--listen SERVER --connect CLIENT}.  The relay (its command-line module,
L{endpointkit._relaycli}) loads only when twistd runs it.
"""

from twisted.application.service import ServiceMaker

endpointkitRelay = ServiceMaker(  # type: ignore[no-untyped-call]
    "endpointkit relay",
    "endpointkit._relaycli",
    "Relay connections from any server endpoint to any client endpoint.",
    "endpointkit-relay",
)
