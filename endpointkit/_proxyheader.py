"""
The PROXY protocol header, versions 1 and 2, as a sans-I/O core: bytes in,
a L{ProxyHeader} out (L{HeaderParser}); a header's fields in, bytes out
(L{buildHeader}).  Nothing here does I/O or knows about transports.

The parser is strict and bounded, since it reads what a peer sends before
anything else about the connection is known:

  - version 1 is at most 107 bytes with its CRLF (the spec's limit), its
    fields separated by single spaces, ports decimal 0-65535 without a
    leading zero, C{TCP4} with IPv4 and C{TCP6} with IPv6 addresses;
  - version 2 is at most C{maxHeader} bytes in all, which caps its TLVs; its
    length is checked against the limit as soon as the 16 fixed bytes are
    in, not once the peer has sent the rest; its TLVs must fill the header
    exactly, and a CRC32C TLV, if present, must match;
  - the first bytes that cannot start either version fail at once, without
    waiting for more.

It is written here rather than taken from PyPI's C{proxy-protocol} (0.11):
that package raises C{struct.error}, C{UnicodeDecodeError} and bare
C{ValueError} on malformed input, takes a truncated TLV as a shorter value,
leaves the length of a version 1 line to its caller, skips the CRC32C check
unless an optional C extension is installed, and brings an asyncio server
and DNSBL client along.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

__all__ = [
    "MAX_V1",
    "V2_SIGNATURE",
    "HeaderParser",
    "InvalidProxyHeader",
    "ProxyHeader",
    "ProxyHeaderTooLarge",
    "ProxySSLInfo",
    "buildHeader",
    "crc32c",
]

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V1 = 107
"""
The longest version 1 header, CRLF included (the spec's limit).
"""

V2_FIXED = 16
DEFAULT_MAX_HEADER = 4096

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30

PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

MAX_UNIQUE_ID = 128

_INET = struct.Struct("!4s4sHH")
_INET6 = struct.Struct("!16s16sHH")
_UNIX = struct.Struct("!108s108s")
_FIXED = struct.Struct("!12sBBH")
_TLV = struct.Struct("!BH")
_SSL = struct.Struct("!BI")

Address = IPv4Address | IPv6Address | UNIXAddress


class InvalidProxyHeader(ValueError):
    """
    What a peer sent is not a valid PROXY protocol header: the connection is
    closed and nothing reaches the application.
    """


class ProxyHeaderTooLarge(InvalidProxyHeader):
    """
    The header is longer than the limit (107 bytes for version 1, the
    listener's C{maxHeader} for version 2).
    """


def _crcTable() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crcTable()


def crc32c(data: bytes) -> int:
    """
    The CRC32C (Castagnoli) checksum of C{data}, as the PROXY protocol's
    C{PP2_TYPE_CRC32C} TLV carries it.
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True)
class ProxySSLInfo:
    """
    The C{PP2_TYPE_SSL} TLV: what the balancer knows of the client's TLS.

    @ivar client: the C{client} bit field (C{PP2_CLIENT_SSL} 1,
        C{PP2_CLIENT_CERT_CONN} 2, C{PP2_CLIENT_CERT_SESS} 4).
    @ivar verified: whether the client presented a certificate the balancer
        verified (the spec's C{verify} field is zero).
    @ivar version: the TLS version, such as C{"TLSv1.3"}, or L{None}.
    @ivar commonName: the client certificate's subject common name, or
        L{None}.
    @ivar cipher: the cipher name, or L{None}.
    @ivar signatureAlgorithm: the certificate's signature algorithm, or
        L{None}.
    @ivar keyAlgorithm: the certificate's key algorithm, or L{None}.
    """

    client: int = 0
    verified: bool = False
    version: str | None = None
    commonName: str | None = None
    cipher: str | None = None
    signatureAlgorithm: str | None = None
    keyAlgorithm: str | None = None

    @property
    def ssl(self) -> bool:
        """
        Whether the client connected over TLS.
        """
        return bool(self.client & PP2_CLIENT_SSL)

    @property
    def clientCertificate(self) -> bool:
        """
        Whether the client presented a certificate (on this connection or
        an earlier one of its TLS session).
        """
        return bool(self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS))

    def pack(self) -> bytes:
        """
        The TLV's value.
        """
        subs = [(PP2_SUBTYPE_SSL_VERSION, self.version),
                (PP2_SUBTYPE_SSL_CN, self.commonName),
                (PP2_SUBTYPE_SSL_CIPHER, self.cipher),
                (PP2_SUBTYPE_SSL_SIG_ALG, self.signatureAlgorithm),
                (PP2_SUBTYPE_SSL_KEY_ALG, self.keyAlgorithm)]
        return _SSL.pack(self.client, 0 if self.verified else 1) + _packTLVs(
            (kind, value.encode("utf-8")) for kind, value in subs if value is not None)

    @classmethod
    def unpack(cls, value: bytes) -> ProxySSLInfo:
        """
        Parse the TLV's value.

        @raise InvalidProxyHeader: it is malformed.
        """
        if len(value) < _SSL.size:
            raise InvalidProxyHeader("PROXY v2 SSL TLV is shorter than 5 bytes")
        client, verify = _SSL.unpack_from(value)
        found: dict[int, str] = {}
        for kind, sub, _ in _unpackTLVs(value[_SSL.size:]):
            try:
                found[kind] = sub.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidProxyHeader(
                    f"PROXY v2 SSL sub-TLV 0x{kind:02x} is not UTF-8") from None
        return cls(client, verify == 0, found.get(PP2_SUBTYPE_SSL_VERSION),
                   found.get(PP2_SUBTYPE_SSL_CN), found.get(PP2_SUBTYPE_SSL_CIPHER),
                   found.get(PP2_SUBTYPE_SSL_SIG_ALG), found.get(PP2_SUBTYPE_SSL_KEY_ALG))


@dataclass(frozen=True)
class ProxyHeader:
    """
    A parsed PROXY protocol header.

    @ivar version: 1 or 2.
    @ivar local: the header carries no client address: a version 2
        C{LOCAL} command (a balancer's own health check), a version 1
        C{UNKNOWN} line, or a version 2 C{UNSPEC} family.  The connection is
        then served as a direct one from the balancer.
    @ivar source: the client's address (L{IPv4Address}, L{IPv6Address} or
        L{UNIXAddress}), or L{None} when C{local}.
    @ivar destination: the address the client connected to, or L{None}.
    @ivar tlvs: version 2 TLVs as C{(type, value)} pairs, in the order sent
        (a CRC32C TLV, once checked, and NOOP TLVs are left out).
    """

    version: int
    local: bool
    source: Address | None = None
    destination: Address | None = None
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())

    def tlv(self, kind: int) -> bytes | None:
        """
        The value of the first TLV of type C{kind}, or L{None}.
        """
        for found, value in self.tlvs:
            if found == kind:
                return value
        return None

    @property
    def alpn(self) -> bytes | None:
        """
        The application protocol the client negotiated with the balancer
        (C{PP2_TYPE_ALPN}), such as C{b"h2"}, or L{None}.
        """
        return self.tlv(PP2_TYPE_ALPN)

    @property
    def authority(self) -> str | None:
        """
        The host name the client asked the balancer for (C{PP2_TYPE_AUTHORITY},
        usually TLS SNI), or L{None}.
        """
        value = self.tlv(PP2_TYPE_AUTHORITY)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def uniqueId(self) -> bytes | None:
        """
        The balancer's ID for this connection (C{PP2_TYPE_UNIQUE_ID}), or
        L{None}.
        """
        return self.tlv(PP2_TYPE_UNIQUE_ID)

    @property
    def ssl(self) -> ProxySSLInfo | None:
        """
        The client's TLS as the balancer saw it (C{PP2_TYPE_SSL}), or
        L{None}.
        """
        value = self.tlv(PP2_TYPE_SSL)
        return None if value is None else ProxySSLInfo.unpack(value)


def _unpackTLVs(data: bytes) -> list[tuple[int, bytes, int]]:
    """
    Each TLV in C{data} as C{(type, value, offset of the value)}.
    """
    found = []
    offset = 0
    end = len(data)
    while offset < end:
        if end - offset < _TLV.size:
            raise InvalidProxyHeader("PROXY v2 header ends inside a TLV's type and length")
        kind, length = _TLV.unpack_from(data, offset)
        offset += _TLV.size
        if end - offset < length:
            raise InvalidProxyHeader(
                f"PROXY v2 TLV 0x{kind:02x} claims {length} bytes, only {end - offset} left")
        found.append((kind, data[offset:offset + length], offset))
        offset += length
    return found


def _packTLVs(tlvs: Iterable[tuple[int, bytes]]) -> bytes:
    parts = []
    for kind, value in tlvs:
        if not 0 <= kind <= 255 or len(value) > 65535:
            raise ValueError(f"TLV type 0x{kind:x} or its {len(value)}-byte value is out of range")
        parts.append(_TLV.pack(kind, len(value)) + value)
    return b"".join(parts)


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0:1] == b"0"):
        raise InvalidProxyHeader(f"PROXY v1 port {text[:8]!r} is not a decimal 0-65535")
    value = int(text)
    if value > 65535:
        raise InvalidProxyHeader(f"PROXY v1 port {value} is over 65535")
    return value


def _parseV1(line: bytes) -> ProxyHeader:
    # line: without the CRLF.
    parts = line[len(V1_PREFIX):].split(b" ")
    if parts[0] == b"UNKNOWN":
        # The spec: the receiver ignores anything after UNKNOWN.
        return ProxyHeader(1, True)
    if len(parts) != 5:
        raise InvalidProxyHeader("PROXY v1 header does not have 5 fields after PROXY")
    family, src, dst, sport, dport = parts
    if family == b"TCP4":
        kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address] = ipaddress.IPv4Address
    elif family == b"TCP6":
        kind = ipaddress.IPv6Address
    else:
        raise InvalidProxyHeader(f"PROXY v1 family {family[:8]!r} is not TCP4, TCP6 or UNKNOWN")
    try:
        source = kind(src.decode("ascii"))
        destination = kind(dst.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidProxyHeader(f"PROXY v1 addresses are not {family.decode()} addresses") from None
    if "%" in str(source) or "%" in str(destination):
        raise InvalidProxyHeader("PROXY v1 addresses carry an IPv6 scope")
    return ProxyHeader(1, False, _address(source, _port(sport)),
                       _address(destination, _port(dport)))


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Address:
    if ip.version == 4:
        return IPv4Address("TCP", str(ip), port)
    return IPv6Address("TCP", str(ip), port)


def _parseV2(header: bytes) -> ProxyHeader:
    _, verCmd, famProto, _length = _FIXED.unpack_from(header)
    command = verCmd & 0x0F
    if command > 1:
        raise InvalidProxyHeader(f"PROXY v2 command 0x{command:x} is neither LOCAL nor PROXY")
    family, transport = famProto >> 4, famProto & 0x0F
    body = header[V2_FIXED:]
    if family > 3 or transport > 2:
        raise InvalidProxyHeader(f"PROXY v2 family/protocol byte 0x{famProto:02x} is unknown")
    sizes = {0: 0, 1: _INET.size, 2: _INET6.size, 3: _UNIX.size}
    size = sizes[family]
    if len(body) < size:
        raise InvalidProxyHeader(
            f"PROXY v2 address block is {len(body)} bytes, its family needs {size}")
    tlvs = _unpackTLVs(body[size:])
    kept = []
    for kind, value, offset in tlvs:
        if kind == PP2_TYPE_CRC32C:
            if len(value) != 4:
                raise InvalidProxyHeader("PROXY v2 CRC32C TLV is not 4 bytes")
            at = V2_FIXED + size + offset
            zeroed = header[:at] + b"\0\0\0\0" + header[at + 4:]
            if crc32c(zeroed) != struct.unpack("!I", value)[0]:
                raise InvalidProxyHeader("PROXY v2 CRC32C checksum does not match")
        elif kind == PP2_TYPE_NOOP:
            continue
        elif kind == PP2_TYPE_UNIQUE_ID and len(value) > MAX_UNIQUE_ID:
            raise InvalidProxyHeader("PROXY v2 unique ID is over 128 bytes")
        elif kind == PP2_TYPE_SSL:
            ProxySSLInfo.unpack(value)
            kept.append((kind, value))
        else:
            kept.append((kind, value))
    local = command == 0 or family == 0 or transport == 0
    if not local and transport == 2:
        raise InvalidProxyHeader("PROXY v2 header is for a datagram (UDP) connection")
    if local:
        return ProxyHeader(2, True, tlvs=tuple(kept))
    source: Address
    destination: Address
    if family == 1:
        s, d, sp, dp = _INET.unpack_from(body)
        source = IPv4Address("TCP", inet_ntop(AF_INET, s), sp)
        destination = IPv4Address("TCP", inet_ntop(AF_INET, d), dp)
    elif family == 2:
        s, d, sp, dp = _INET6.unpack_from(body)
        source = IPv6Address("TCP", str(ipaddress.IPv6Address(s)), sp)
        destination = IPv6Address("TCP", str(ipaddress.IPv6Address(d)), dp)
    else:
        s, d = _UNIX.unpack_from(body)
        source = UNIXAddress(s.split(b"\0", 1)[0])
        destination = UNIXAddress(d.split(b"\0", 1)[0])
    return ProxyHeader(2, False, source, destination, tuple(kept))


class HeaderParser:
    """
    Reads one PROXY header, v1 or v2 (detected from its first bytes), from
    the start of a byte stream.

    Feed it what arrives with L{HeaderParser.feed} until it gives a
    L{ProxyHeader}; L{HeaderParser.rest} then holds the bytes after the
    header (the application's).  It raises L{InvalidProxyHeader} (or
    L{ProxyHeaderTooLarge}) as soon as the bytes cannot become a valid
    header, and never holds more than C{maxHeader} bytes.

    @param maxHeader: the largest version 2 header accepted, in bytes,
        including its 16 fixed bytes, addresses and TLVs.
    """

    def __init__(self, maxHeader: int = DEFAULT_MAX_HEADER) -> None:
        self.maxHeader = maxHeader
        self._buffer = b""
        self._need: int | None = None
        self.header: ProxyHeader | None = None
        self.rest = b""

    def startsLikeHeader(self, data: bytes) -> bool:
        """
        Whether C{data} (the first bytes of a stream) could be the start of
        a PROXY header of either version.
        """
        n = min(len(data), len(V2_SIGNATURE))
        if data[:n] == V2_SIGNATURE[:n]:
            return True
        n = min(len(data), len(V1_PREFIX))
        return data[:n] == V1_PREFIX[:n]

    @property
    def buffered(self) -> bytes:
        """
        The bytes fed so far that are not yet a whole header.
        """
        return self._buffer

    def feed(self, data: bytes) -> ProxyHeader | None:
        """
        Add bytes from the stream.

        @return: the header once it is complete (then see L{rest}), else
            L{None}.
        @raise InvalidProxyHeader: the stream does not start with a valid
            header, or the header is over its size limit.
        """
        if self.header is not None:
            raise RuntimeError("the header was already parsed")
        buffer = self._buffer + data if self._buffer else data
        if self._need is None:
            if not self.startsLikeHeader(buffer):
                raise InvalidProxyHeader("the connection does not start with a PROXY header")
            if buffer[:1] == b"P":
                return self._v1(buffer)
            if len(buffer) < V2_FIXED:
                self._buffer = buffer
                return None
            version = buffer[12] >> 4
            if version != 2:
                raise InvalidProxyHeader(f"PROXY v2 signature with version {version}")
            length: int = struct.unpack_from("!H", buffer, 14)[0]
            total = V2_FIXED + length
            if total > self.maxHeader:
                raise ProxyHeaderTooLarge(
                    f"PROXY v2 header of {total} bytes is over the limit of "
                    f"{self.maxHeader}")
            self._need = total
        need = self._need
        if len(buffer) < need:
            self._buffer = buffer
            return None
        header = _parseV2(buffer[:need])
        return self._done(header, buffer[need:])

    def _v1(self, buffer: bytes) -> ProxyHeader | None:
        end = buffer.find(b"\n", 0, MAX_V1)
        if end < 0:
            if len(buffer) >= MAX_V1:
                raise ProxyHeaderTooLarge(f"PROXY v1 header has no end within {MAX_V1} bytes")
            self._buffer = buffer
            return None
        if end == 0 or buffer[end - 1] != 0x0D:
            raise InvalidProxyHeader("PROXY v1 header ends with LF, not CRLF")
        line = buffer[:end - 1]
        if b"\r" in line or not all(0x20 <= b < 0x7F for b in line):
            raise InvalidProxyHeader("PROXY v1 header has bytes other than printable ASCII")
        return self._done(_parseV1(line), buffer[end + 1:])

    def _done(self, header: ProxyHeader, rest: bytes) -> ProxyHeader:
        self.header = header
        self.rest = rest
        self._buffer = b""
        return header


def _ipOf(address: Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    assert not isinstance(address, UNIXAddress)
    return ipaddress.ip_address(address.host.partition("%")[0])


_MAPPED = b"\0" * 10 + b"\xff\xff"


def _packedOf(address: Address) -> bytes:
    """
    The packed form of an IP address's host (4 or 16 bytes), a zone
    (C{%eth0}) dropped: C{inet_pton}, which is several times quicker than
    C{ipaddress} for the same bytes.

    @raise ValueError: the host is not an IP address.
    """
    assert not isinstance(address, UNIXAddress)
    host = address.host.partition("%")[0]
    try:
        return inet_pton(AF_INET, host)
    except OSError:
        pass
    try:
        return inet_pton(AF_INET6, host)
    except OSError:
        raise ValueError(f"{host!r} is not an IP address") from None


def _mapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if ip.version == 6:
        return ip
    return ipaddress.IPv6Address("::ffff:" + str(ip))


def buildHeader(version: int, source: Address | None = None,
                destination: Address | None = None,
                tlvs: Sequence[tuple[int, bytes]] = (),
                checksum: bool = False) -> bytes:
    """
    A PROXY header announcing a connection from C{source} to
    C{destination}.

    Without addresses (either one L{None}) it is a version 2 C{LOCAL} or a
    version 1 C{UNKNOWN} header.  An IPv4 and an IPv6 address together are
    sent as IPv6, the IPv4 one mapped (C{::ffff:a.b.c.d}).

    @param version: 1 or 2.
    @param tlvs: version 2 TLVs as C{(type, value)} pairs.
    @param checksum: add a C{PP2_TYPE_CRC32C} TLV (version 2).
    @raise ValueError: the addresses cannot be sent in this version (a UNIX
        address in version 1, a UNIX address with an IP one), or TLVs are
        given for version 1.
    """
    if version not in (1, 2):
        raise ValueError(f"PROXY protocol version {version!r} is not 1 or 2")
    local = source is None or destination is None
    if version == 1:
        if tlvs:
            raise ValueError("PROXY v1 carries no TLVs")
        if local:
            return b"PROXY UNKNOWN\r\n"
        assert source is not None and destination is not None
        if isinstance(source, UNIXAddress) or isinstance(destination, UNIXAddress):
            raise ValueError("PROXY v1 cannot carry UNIX socket addresses")
        s, d = _ipOf(source), _ipOf(destination)
        if s.version != d.version:
            s, d = _mapped(s), _mapped(d)
        family = b"TCP4" if s.version == 4 else b"TCP6"
        return b"PROXY %s %s %s %d %d\r\n" % (
            family, str(s).encode(), str(d).encode(), source.port, destination.port)
    if local:
        verCmd, famProto, block = 0x20, 0x00, b""
    else:
        assert source is not None and destination is not None
        verCmd = 0x21
        unix = isinstance(source, UNIXAddress), isinstance(destination, UNIXAddress)
        if isinstance(source, UNIXAddress) and isinstance(destination, UNIXAddress):
            famProto = 0x31
            block = _UNIX.pack(_pathBytes(source), _pathBytes(destination))
        elif any(unix):
            raise ValueError("PROXY v2 cannot mix a UNIX and an IP address")
        else:
            assert not isinstance(source, UNIXAddress)
            assert not isinstance(destination, UNIXAddress)
            sp, dp = _packedOf(source), _packedOf(destination)
            if len(sp) != len(dp):
                sp, dp = _MAPPED + sp if len(sp) == 4 else sp, _MAPPED + dp if len(dp) == 4 else dp
            if len(sp) == 4:
                famProto = 0x11
                block = _INET.pack(sp, dp, source.port, destination.port)
            else:
                famProto = 0x21
                block = _INET6.pack(sp, dp, source.port, destination.port)
    extra = _packTLVs(tlvs)
    if checksum:
        extra += _TLV.pack(PP2_TYPE_CRC32C, 4) + b"\0\0\0\0"
    length = len(block) + len(extra)
    if length > 65535:
        raise ValueError(f"PROXY v2 header body of {length} bytes is over 65535")
    header = V2_SIGNATURE + bytes((verCmd, famProto)) + struct.pack("!H", length) + block + extra
    if checksum:
        header = header[:-4] + struct.pack("!I", crc32c(header))
    return header


def _pathBytes(address: UNIXAddress) -> bytes:
    name = address.name or b""
    path = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if len(path) > 107:
        raise ValueError(f"UNIX path of {len(path)} bytes is too long for PROXY v2")
    return path
