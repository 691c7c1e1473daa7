"""
A twistd application for the lifecycle tests: a web server whose answers
take C{?delay=SECONDS}, run by endpointkit's EndpointService.

Environment: LIFECYCLE_DESCRIPTION (server description), LIFECYCLE_DRAIN
(drain timeout), LIFECYCLE_ANNOUNCE (file that receives the client
description once listening), LIFECYCLE_ARRIVED (file that gets a line per
request received).
"""

import os

from twisted.application import service
from twisted.internet import reactor
from twisted.web import resource, server

from endpointkit.lifecycle import EndpointService, clientDescriptionFor


class Slow(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        delay = float(request.args.get(b"delay", [b"1"])[0])
        body = b"slow answer after %d ms\n" % (delay * 1000,)

        def finish():
            request.setHeader(b"content-length", b"%d" % (len(body),))
            request.write(body)
            request.finish()

        call = reactor.callLater(delay, finish)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        with open(os.environ["LIFECYCLE_ARRIVED"], "a") as f:
            f.write(request.uri.decode() + "\n")
        return server.NOT_DONE_YET


def announce(port):
    path = os.environ["LIFECYCLE_ANNOUNCE"]
    with open(path + ".tmp", "w") as f:
        f.write(clientDescriptionFor(port))
    os.rename(path + ".tmp", path)


application = service.Application("lifecycle-slow")
web = EndpointService(os.environ["LIFECYCLE_DESCRIPTION"], server.Site(Slow()),
                      drainTimeout=float(os.environ.get("LIFECYCLE_DRAIN", "30")))
web.setServiceParent(application)
web.whenListening().addCallback(announce)
