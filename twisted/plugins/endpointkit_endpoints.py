"""
endpointkit's endpoint types, for Twisted's plugin discovery.  Parser
objects only: each one loads its endpoint family when first used.
"""

from endpointkit._plugin import ClientParser, ServerParser

timeoutClientParser = ClientParser("timeout", "endpointkit.deadline:timeoutType")
hostnameClientParser = ClientParser("hostname", "endpointkit.deadline:hostnameType")
srvClientParser = ClientParser("srv", "endpointkit.srv:srvType")
socks5ClientParser = ClientParser("socks5", "endpointkit.proxy:socks5Type")
socks4aClientParser = ClientParser("socks4a", "endpointkit.proxy:socks4aType")
httpconnectClientParser = ClientParser("httpconnect", "endpointkit.proxy:httpconnectType")
fallbackClientParser = ClientParser("fallback", "endpointkit.failover:fallbackType")
raceClientParser = ClientParser("race", "endpointkit.failover:raceType")
memoryClientParser = ClientParser("memory", "endpointkit.memory:memoryClientType")
memoryServerParser = ServerParser("memory", "endpointkit.memory:memoryServerType")
reuseportServerParser = ServerParser("reuseport", "endpointkit.reuseport:reuseportType")
adoptServerParser = ServerParser("adopt", "endpointkit.adopt:adoptType")
multiServerParser = ServerParser("multi", "endpointkit.multi:multiType")
limitServerParser = ServerParser("limit", "endpointkit.limit:limitType")
sshClientParser = ClientParser("ssh", "endpointkit.ssh:sshType")
sshexecClientParser = ClientParser("sshexec", "endpointkit.ssh:sshexecType")
execClientParser = ClientParser("exec", "endpointkit.process:execType")
tlswrapClientParser = ClientParser("tlswrap", "endpointkit.tlswrap:tlswrapClientType")
tlswrapServerParser = ServerParser("tlswrap", "endpointkit.tlswrap:tlswrapServerType")
proxyprotocolServerParser = ServerParser("proxyprotocol", "endpointkit.proxyprotocol:proxyprotocolServerType")
proxyprotocolClientParser = ClientParser("proxyprotocol", "endpointkit.proxyprotocol:proxyprotocolClientType")
