# A twistd application for the proxyprotocol tests: PP_RAW is a server
# description for a line protocol that answers each line with this process's
# PID, the peer seen in connectionMade and the peer seen now; PP_WEB (when
# set) is one for a twisted.web site that answers with getClientAddress().
import os

from twisted.application import service, strports
from twisted.internet import protocol
from twisted.web import resource, server


class Peer(protocol.Protocol):
    def connectionMade(self):
        self.seen = self.transport.getPeer()

    def dataReceived(self, data):
        now = self.transport.getPeer()
        self.transport.write(
            f"{os.getpid()} {self.seen.host}:{self.seen.port} {now.host}\n".encode())


class Client(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        address = request.getClientAddress()
        return f"{os.getpid()} {address.host}:{address.port}".encode()


application = service.Application("pp")
strports.service(os.environ["PP_RAW"], protocol.Factory.forProtocol(Peer)).setServiceParent(
    application)
if os.environ.get("PP_WEB"):
    strports.service(os.environ["PP_WEB"], server.Site(Client())).setServiceParent(application)
