"""
The twistd plugin C{endpointkit-relay}: C{twistd -n endpointkit-relay
--listen SERVER --connect CLIENT}.  The relay itself loads only when twistd
runs it.
"""

from twisted.application.service import ServiceMaker

endpointkitRelay = ServiceMaker(  # type: ignore[no-untyped-call]
    "endpointkit._relaycli",
    "endpointkit._relaycli",
    "Relay connections from any server endpoint to any client endpoint.",
    "endpointkit._relaycli",
)
