"""
Credential headers (C{Authorization}, C{Proxy-Authorization}, C{Cookie}) in
C{httpconnect:}'s C{headers=} are secrets: wherever a description is shown
(C{check}, the log, reprs, errors) their values are C{***}; and a
C{Proxy-Authorization} header beside C{user=} is refused.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

import endpointkit
from endpointkit import cli
from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit._lookup import parseDescription
from endpointkit.proxy import HTTPConnectClientEndpoint
from tests._support import freePort

SECRET = "dXNlcjpzM2NyZXQ="
COOKIE = "session=c00kie"

PROXY = r"endpoint=tcp\:127.0.0.1\:3128"
DESCRIPTION = (rf"httpconnect:example.com:443:{PROXY}:headers=Proxy-Authorization\: Basic "
               rf"{SECRET}|User-Agent\: ek/1|cookie\: {COOKIE}|Authorization\: Bearer {SECRET}")


def parseBoth(description: str) -> list[Any]:
    """
    Parse C{description} with endpointkit's parse API and with Twisted's
    own C{clientFromString} (endpointkit's plugin), giving each result or
    error.
    """
    reactor = MemoryReactorClock()
    results: list[Any] = []
    for parse in (endpointkit.clientFromString, endpoints.clientFromString):
        try:
            results.append(parse(reactor, description))
        except DescriptionError as e:
            results.append(e)
    return results


class MaskedTests(SynchronousTestCase):
    def assertHidden(self, text: str) -> None:
        self.assertNotIn(SECRET.rstrip("="), text)
        self.assertNotIn("c00kie", text)

    def test_descriptionMasked(self) -> None:
        """
        The masked description (C{str}, C{repr}, what C{check} and the log
        show) hides credential header values, after the scheme; the other
        headers are shown; the real description keeps them and parses back.
        """
        parsed = parseDescription(DESCRIPTION, "client")
        self.assertHidden(repr(parsed))
        for text in (str(parsed), parsed.description(masked=True)):
            self.assertHidden(text)
            self.assertIn(r"headers=Proxy-Authorization\: Basic ***|User-Agent\: ek/1|"
                          r"cookie\: ***|Authorization\: Bearer ***", text)
        self.assertIn(SECRET.rstrip("="), parsed.description())
        again = parseDescription(parsed.description(), "client")
        self.assertEqual(again.values["headers"], parsed.values["headers"])
        self.assertEqual(parsed.values["headers"][0], ("Proxy-Authorization", f"Basic {SECRET}"))

    def test_valueAndEndpointRepr(self) -> None:
        """
        The typed value and the built endpoint's C{headers} show masked
        values in their C{repr}, but carry the real ones.
        """
        endpoint = endpointkit.clientFromString(MemoryReactorClock(), DESCRIPTION)
        assert isinstance(endpoint, HTTPConnectClientEndpoint)
        for text in (repr(endpoint), repr(endpoint.headers), str(endpoint.headers),
                     repr(parseDescription(DESCRIPTION, "client").values)):
            self.assertHidden(text)
        self.assertIn("('User-Agent', 'ek/1')", repr(endpoint.headers))
        self.assertEqual(dict(endpoint.headers)["Proxy-Authorization"], f"Basic {SECRET}")
        fromPython = HTTPConnectClientEndpoint(
            MemoryReactorClock(), "example.com", 443, object(),
            headers=[("Cookie", COOKIE)])
        self.assertEqual(repr(fromPython.headers), "(('Cookie', '***'),)")

    def test_checkOutput(self) -> None:
        """
        C{endpointkit check} shows the description and each value without
        the credentials.
        """
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.main(["check", DESCRIPTION], out, err), 0)
        self.assertHidden(out.getvalue())
        self.assertIn("Proxy-Authorization", out.getvalue())
        self.assertIn("'Basic ***'", out.getvalue())

    def test_badHeadersErrorMasked(self) -> None:
        """
        An error about a bad C{headers} value shows the value with
        credentials masked, through endpointkit's parser and Twisted's.
        """
        cases = {
            "Proxy-Authorization: Basic {s}|bad name: x": "'bad name' is not a header name",
            "Authorization: Bearer {s}|Host: x": "Host is set by the endpoint itself",
            # (the secret ends in '=', which reads as the separator)
            "Proxy-Authorization Basic {s}": "'Proxy-Authorization ***' is not a header name",
            "Proxy-Authorization Basic {t}": "'Proxy-Authorization ***' has no ':'",
            "Basic {s}": "'Basic ***' is not a header name",
            "Authorization Basic {s}": "'Authorization ***' is not a header name",
            "Cookie: a=1|novalue": "'novalue' has no ':'",
        }
        for headers, message in cases.items():
            text = headers.format(s=SECRET, t=SECRET.rstrip("="))
            description = buildDescription("httpconnect", "example.com", 443,
                                           endpoint="tcp:127.0.0.1:3128", headers=text)
            for error in parseBoth(description):
                self.assertIsInstance(error, DescriptionError, text)
                self.assertIn(message, str(error), text)
                self.assertHidden(str(error))
                self.assertHidden(str(error.value))
                self.assertEqual(error.argument, "headers")

    def test_unescapedColonHidesTheRest(self) -> None:
        """
        With the colon of a credential header unescaped, the credential
        becomes a positional value of its own: the error does not show it.
        """
        cases = {
            SECRET.rstrip("="): "got an extra ***",
            # With its '=', the credential reads as an unknown keyword.
            SECRET: "unknown argument *** (after a secret: was a colon in it left unescaped?)",
        }
        for secret, message in cases.items():
            description = (rf"httpconnect:example.com:443:{PROXY}:"
                           f"headers=Proxy-Authorization: Basic {secret}")
            for error in parseBoth(description):
                self.assertIsInstance(error, DescriptionError)
                self.assertIn(message, str(error))
                self.assertHidden(str(error))
        # A value that follows a harmless header is shown.
        description = rf"httpconnect:example.com:443:{PROXY}:headers=X-A:extra"
        error = self.assertRaises(DescriptionError, parseDescription, description, "client")
        self.assertIn("got an extra 'extra'", str(error))

    def test_unescapedColonInPassword(self) -> None:
        """
        The same for a password (a L{Secret}) cut at its colon.
        """
        description = rf"httpconnect:example.com:443:{PROXY}:user=u:password=ab:{SECRET}"
        for error in parseBoth(description):
            self.assertIsInstance(error, DescriptionError)
            self.assertHidden(str(error))


class CredentialsTwiceTests(SynchronousTestCase):
    def test_userAndProxyAuthorization(self) -> None:
        """
        C{user=} and a C{Proxy-Authorization} header would send two
        credentials: a L{DescriptionError} (and a C{ValueError} from Python).
        """
        description = buildDescription(
            "httpconnect", "example.com", 443, endpoint="tcp:127.0.0.1:3128",
            user="u", password="p", headers=f"proxy-authorization: Basic {SECRET}")
        for error in parseBoth(description):
            self.assertIsInstance(error, DescriptionError)
            self.assertIn("httpconnect: argument 'headers' has a Proxy-Authorization header "
                          "and 'user' is given too: two credentials would be sent", str(error))
            self.assertNotIn(SECRET, str(error))
        self.assertRaises(DescriptionError, parseDescription, description, "client")
        self.assertRaises(ValueError, HTTPConnectClientEndpoint, MemoryReactorClock(),
                          "example.com", 443, object(), user="u",
                          headers=[("Proxy-Authorization", "Basic x")])

    def test_proxyAuthorizationTwice(self) -> None:
        description = buildDescription(
            "httpconnect", "example.com", 443, endpoint="tcp:127.0.0.1:3128",
            headers="Proxy-Authorization: Basic a|Proxy-Authorization: Basic b")
        error = self.assertRaises(DescriptionError, parseDescription, description, "client")
        self.assertIn("more than one Proxy-Authorization header", str(error))

    def test_eitherAloneIsFine(self) -> None:
        for extra in ({"user": "u", "password": "p", "headers": "Authorization: Basic x"},
                      {"headers": "Proxy-Authorization: Basic x"}):
            description = buildDescription("httpconnect", "example.com", 443,
                                           endpoint="tcp:127.0.0.1:3128", **extra)
            self.assertEqual(parseDescription(description, "client").prefix, "httpconnect")


class RelayLogTests(TestCase):
    """
    The relay logs its target through the masked description.
    """

    @defer.inlineCallbacks
    def test_relayLogHidesCredentials(self) -> Any:
        from endpointkit.relay import RelayService

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        # The proxy's port has nobody listening: the relay logs that it
        # could not connect, naming its target.
        target = (rf"httpconnect:example.com:443:endpoint=tcp\:127.0.0.1\:{freePort()}:"
                  rf"headers=Proxy-Authorization\: Basic {SECRET}|Cookie\: {COOKIE}")
        service = RelayService("tcp:0:interface=127.0.0.1", target, reactor=_reactor)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        port = yield service.listening
        client = endpoints.TCP4ClientEndpoint(_reactor, "127.0.0.1", port.getHost().port)
        lost: defer.Deferred[None] = defer.Deferred()

        class Client(Protocol):
            def connectionLost(self, reason: Any = None) -> None:
                lost.callback(None)

        yield client.connect(Factory.forProtocol(Client))
        yield lost.addTimeout(30, _reactor)
        yield service.stopService()
        texts = [formatEvent(event) for event in events]
        shown = [text for text in texts if "httpconnect" in text]
        self.assertTrue(any("could not connect" in text for text in shown), texts)
        self.assertTrue(any("relaying to" in text for text in shown), texts)
        for text in shown:
            self.assertIn(r"Proxy-Authorization\: Basic ***|Cookie\: ***", text)
        for text in texts:
            self.assertNotIn(SECRET, text)
            self.assertNotIn("c00kie", text)
