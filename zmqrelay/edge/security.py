"""
CURVE security: certificates, the keys a node accepts, and the ZAP handler.

With CURVE on, every hop it covers is encrypted and every peer is
authenticated by its public key.  This module owns:

  - certificates: ordinary C{zmq.auth} files (C{NAME.key} public,
    C{NAME.key_secret} secret) with two metadata fields, C{id} (the node id
    the key stands for) and C{role}; L{writeCertificates} makes them
    (C{zmqrelay keygen}), L{readCertificate} reads them;
  - L{KeyRegistry}: the authorized public keys of a node, each bound to one
    node id and one role, loaded from a directory of C{.key} files;
  - L{zapReply} and L{ZapHandler}: the ZAP (RFC 27) handler, a ROUTER on
    C{inproc://zeromq.zap.01} of the node's own context, read by the reactor
    like every other socket (no thread).  It answers 200 with
    C{User-Id} = the node id bound to the key, or 400 for an unknown key or
    a role that may not use that socket;
  - L{CurveConfig}: what one node knows (its keypair, the public keys of the
    nodes it dials, its registry), carried by L{zmqrelay.core.config.NodeConfig}
    as C{curve}, and the helpers the roles use to secure their sockets.

The binding of id to key is finished by L{zmqrelay.edge.front.Front}: ZeroMQ
hands it the C{User-Id} of each message, and at HELLO the claimed id and
role must be the ones bound to that key (L{KeyRegistry.checkHello}).

Which sockets use CURVE:

  - a node with a registry (C{--curve-authorized}) secures everything it
    binds: its control ROUTER (ZAP domain L{CONTROL}), its notification
    XPUB (L{SUBSCRIBE}, any known key) and XSUB (L{PUBLISH}, only proxies
    and servers may publish);
  - a node dials with CURVE every endpoint it has the server's public key
    for (C{--curve-server-key} for its upstream, C{--curve-peer-key} for
    others), and the notification socket that goes with that endpoint.

A socket that binds with CURVE must dial with CURVE too: with a ZAP domain
set, libzmq sends even a plain outgoing connection to the ZAP handler, which
refuses anything but CURVE.
"""

import os

from twisted.logger import Logger
from zmq.utils import z85

from zmqrelay.core import protocol
from zmqrelay.core.errors import AuthenticationFailed
from zmqrelay.core.ratelimit import TokenBucket

log = Logger()

#: Where libzmq sends its ZAP requests (one handler per context).
ZAP_ENDPOINT = "inproc://zeromq.zap.01"

ZAP_VERSION = b"1.0"

#: ZAP domain of control ROUTERs: any known key (the role is checked at HELLO).
CONTROL = b"zmqrelay.control"

#: ZAP domain of notification XPUBs (subscribers): any known key.
SUBSCRIBE = b"zmqrelay.subscribe"

#: ZAP domain of notification XSUBs (publishers): proxies and servers only.
PUBLISH = b"zmqrelay.publish"

#: Domain to the roles allowed on it (C{None}: every role).
DOMAIN_ROLES = {
    CONTROL: None,
    SUBSCRIBE: None,
    PUBLISH: frozenset([protocol.PROXY, protocol.SERVER]),
}

#: File name endings of certificates.
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


class Identity:
    """
    What one authorized key stands for.

    @ivar nodeId: the node id the key may use (L{str}).
    @ivar role: the role it may use.
    @ivar publicKey: the key, Z85 (L{bytes}).
    @ivar source: the file it came from, or C{None}.
    """

    __slots__ = ("nodeId", "role", "publicKey", "source")

    def __init__(self, nodeId, role, publicKey, source=None):
        self.nodeId = nodeId
        self.role = role
        self.publicKey = publicKey
        self.source = source

    def __repr__(self):
        return f"<Identity {self.role} {self.nodeId} {self.publicKey.decode('ascii')}>"


# Certificates


def readCertificate(path):
    """
    Read a C{zmq.auth} certificate file.

    @param path: a C{.key} or C{.key_secret} file.
    @return: (public key, secret key or C{None}, metadata L{dict} of L{str}),
        keys in Z85 (L{bytes}).
    @raise ValueError: if it holds no valid public key.
    @raise OSError: if it cannot be read.
    """
    import zmq.auth

    public, secret = zmq.auth.load_certificate(path)
    _checkKey(public, path, "public")
    if secret is not None:
        _checkKey(secret, path, "secret")
    return public, secret, _readMetadata(path)


def _checkKey(key, path, kind):
    if len(key) != 40:
        raise ValueError(f"{path}: {kind} key is not 40 Z85 characters")
    try:
        z85.decode(key)
    except Exception:
        raise ValueError(f"{path}: {kind} key is not valid Z85")


def _readMetadata(path):
    """
    The C{metadata} section of a ZPL certificate: indented C{name = value}
    lines (values may be quoted); lines whose first character that is not
    a space is C{#} are comments (a C{#} inside a value is part of it).
    """
    metadata = {}
    section = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.rstrip()
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            if not text[0].isspace():
                section = text.strip()
                continue
            if section == "metadata" and "=" in text:
                name, value = text.split("=", 1)
                metadata[name.strip()] = value.strip().strip("\"'")
    return metadata


def writeCertificates(directory, name, nodeId=None, role=protocol.CLIENT, force=False):
    """
    Make a new keypair as C{DIRECTORY/NAME.key} (public) and
    C{DIRECTORY/NAME.key_secret} (secret, mode 0600), both carrying C{id}
    and C{role} metadata.

    @param nodeId: the node id the key stands for (default: C{name}).
    @param role: the role it stands for.
    @param force: overwrite existing files.
    @return: (public path, secret path).
    @raise ValueError: for a bad name or role.
    @raise FileExistsError: if a file exists and C{force} is false.
    """
    import zmq.auth

    nodeId = name if nodeId is None else nodeId
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"bad certificate name {name!r}")
    if role not in protocol.ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(protocol.ROLES))}, not {role!r}")
    if not nodeId or len(nodeId) > 256 or any(c in nodeId for c in "\"'\n#"):
        raise ValueError(f"bad node id {nodeId!r}")
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, name)
    if not force:
        for path in (base + PUBLIC_SUFFIX, base + SECRET_SUFFIX):
            if os.path.exists(path):
                raise FileExistsError(f"{path} exists (use --force to replace it)")
    metadata = {"id": nodeId, "role": role}
    # No moment where the secret key is readable by others.
    umask = os.umask(0o077)
    try:
        publicPath, secretPath = zmq.auth.create_certificates(directory, name, metadata)
    finally:
        os.umask(umask)
    os.chmod(publicPath, 0o644)
    # pyzmq writes the metadata into the secret file only; the public file
    # is the one a relay's registry reads.
    with open(publicPath, encoding="utf-8") as f:
        text = f.read()
    lines = "".join(f"    {k} = \"{v}\"\n" for k, v in metadata.items())
    with open(publicPath, "w", encoding="utf-8") as f:
        f.write(text.replace("metadata\n", "metadata\n" + lines, 1))
    if _readMetadata(publicPath) != metadata:
        raise ValueError(f"{publicPath}: could not write metadata")
    return publicPath, secretPath


def loadKeypair(path):
    """
    @param path: a C{.key_secret} certificate.
    @return: (public, secret, metadata).
    @raise ValueError: if it holds no secret key.
    """
    public, secret, metadata = readCertificate(path)
    if secret is None:
        raise ValueError(f"{path} holds no secret key (give the .key_secret file)")
    return public, secret, metadata


def loadPublicKey(path):
    """
    @return: the public key (Z85) of a certificate.
    """
    return readCertificate(path)[0]


# The authorized keys


class KeyRegistry:
    """
    The public keys a node accepts, each bound to one node id and one role.

    A key may use only its own id and role: ZAP refuses unknown keys, and
    L{checkHello} refuses a HELLO that claims another id or role.
    """

    def __init__(self):
        self._byKey = {}
        self._byId = {}

    def __len__(self):
        return len(self._byKey)

    def identities(self):
        """
        @return: the L{Identity}s, sorted by node id.
        """
        return sorted(self._byKey.values(), key=lambda i: i.nodeId)

    def add(self, publicKey, nodeId, role, source=None):
        """
        Authorize C{publicKey} (Z85) for C{nodeId} as C{role}.

        @return: the L{Identity}.
        @raise ValueError: if the key or the id is already bound, or the role
            or key is not valid.
        """
        if role not in protocol.ROLES:
            raise ValueError(f"{source or nodeId}: unknown role {role!r}")
        if not nodeId or len(nodeId) > 256:
            raise ValueError(f"{source or nodeId}: bad node id {nodeId!r}")
        if isinstance(publicKey, str):
            publicKey = publicKey.encode("ascii")
        _checkKey(publicKey, source or nodeId, "public")
        binary = z85.decode(publicKey)
        if binary in self._byKey:
            other = self._byKey[binary]
            raise ValueError(
                f"{source or nodeId}: key already authorized for {other.nodeId} ({other.source})"
            )
        if nodeId in self._byId:
            other = self._byId[nodeId]
            raise ValueError(f"{source or nodeId}: id {nodeId!r} already bound to {other.source}")
        identity = Identity(nodeId, role, publicKey, source)
        self._byKey[binary] = identity
        self._byId[nodeId] = identity
        return identity

    def identify(self, key):
        """
        @param key: a public key, 32 bytes binary (as ZAP gives it).
        @return: its L{Identity}, or C{None}.
        """
        return self._byKey.get(key)

    def byId(self, nodeId):
        """
        @return: the L{Identity} bound to C{nodeId}, or C{None}.
        """
        return self._byId.get(nodeId)

    def checkHello(self, userId, nodeId, role):
        """
        Check a HELLO against the key of the connection it came on.

        @param userId: the ZAP C{User-Id} of the connection (L{str}), or
            C{None} if it has none.
        @raise AuthenticationFailed: unless C{nodeId} and C{role} are the ones
            bound to that key.
        """
        identity = self._byId.get(userId) if userId else None
        if identity is None:
            raise AuthenticationFailed("connection not authenticated by a known CURVE key")
        if nodeId != identity.nodeId:
            raise AuthenticationFailed(f"this key is bound to id {identity.nodeId!r}, not {nodeId!r}")
        if role != identity.role:
            raise AuthenticationFailed(f"this key is for a {identity.role}, not a {role}")

    @classmethod
    def fromPath(cls, path):
        """
        Load the public certificates of a directory (every C{*.key}), or one
        certificate file.

        Each file's metadata gives the node id (C{id}, default: the file name
        without C{.key}) and the role (C{role}, default C{client}).

        @raise ValueError: for a bad certificate, a key or id given twice, or
            a directory with no certificate.
        @raise OSError: if C{path} cannot be read.
        """
        registry = cls()
        if os.path.isdir(path):
            files = sorted(
                os.path.join(path, name) for name in os.listdir(path) if name.endswith(PUBLIC_SUFFIX)
            )
            if not files:
                raise ValueError(f"no public certificates (*{PUBLIC_SUFFIX}) in {path}")
        else:
            files = [path]
        for filename in files:
            public, _, metadata = readCertificate(filename)
            stem = os.path.basename(filename)
            for suffix in (SECRET_SUFFIX, PUBLIC_SUFFIX):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
            registry.add(public, metadata.get("id") or stem, metadata.get("role", protocol.CLIENT), filename)
        return registry


# What one node knows


class CurveConfig:
    """
    The CURVE settings of one node.

    @ivar public: its public key (Z85).
    @ivar secret: its secret key (Z85).
    @ivar nodeId: the C{id} of its own certificate, or C{None}.
    @ivar serverKeys: dialled endpoint to that server's public key (Z85).
    @ivar registry: the L{KeyRegistry} of keys it accepts, or C{None} if it
        binds plain sockets.
    """

    def __init__(self, public, secret, serverKeys=None, registry=None, nodeId=None):
        self.public = public
        self.secret = secret
        self.serverKeys = dict(serverKeys or {})
        self.registry = registry
        self.nodeId = nodeId

    @classmethod
    def fromFiles(cls, secretPath, serverKeyPaths=None, authorizedPath=None):
        """
        @param secretPath: this node's C{.key_secret} certificate.
        @param serverKeyPaths: dialled endpoint to the public certificate of
            the node there.
        @param authorizedPath: directory (or file) of public certificates
            this node accepts, or C{None} to bind plain sockets.
        @raise ValueError: for a bad certificate.
        @raise OSError: if a file cannot be read.
        """
        public, secret, metadata = loadKeypair(secretPath)
        serverKeys = {
            endpoint: loadPublicKey(path) for endpoint, path in (serverKeyPaths or {}).items()
        }
        registry = KeyRegistry.fromPath(authorizedPath) if authorizedPath else None
        return cls(public, secret, serverKeys, registry, metadata.get("id"))

    def boundSocket(self, domain):
        """
        @return: the C{curve} socket option of a socket this node binds in
            ZAP C{domain}, or C{None} if it binds plain sockets.
        """
        if self.registry is None:
            return None
        return {"server": True, "public": self.public, "secret": self.secret, "domain": domain}

    def dialSocket(self, endpoint):
        """
        @return: the C{curve} socket option for dialling C{endpoint}, or
            C{None} if we do not know a server key for it (plain).
        """
        serverKey = self.serverKeys.get(endpoint)
        if serverKey is None:
            return None
        return {"serverkey": serverKey, "public": self.public, "secret": self.secret}


def _curve(config):
    return getattr(config, "curve", None)


def boundOptions(config, domain):
    """
    @param config: a L{zmqrelay.core.config.NodeConfig}.
    @return: the L{zmqrelay.edge._zmq.SocketOptions} of a socket bound in ZAP
        C{domain}, or C{None} (the factory's plain options).
    """
    curve = _curve(config)
    if curve is None or curve.registry is None:
        return None
    return config.socketOptions(curve.boundSocket(domain))


def dialOptions(config, endpoint):
    """
    @return: the L{zmqrelay.edge._zmq.SocketOptions} of a socket that dials
        C{endpoint}, or C{None} (the factory's plain options).
    """
    curve = _curve(config)
    if curve is None:
        return None
    option = curve.dialSocket(endpoint)
    return None if option is None else config.socketOptions(option)


def secureDial(sock, config, endpoint):
    """
    Before an existing socket connects somewhere on behalf of the hop to
    C{endpoint} (a SUB to the pub endpoint of a relay a link dialled, an
    XPUB to its sub endpoint): use that hop's security.
    """
    curve = _curve(config)
    if curve is not None:
        sock.useCurve(curve.dialSocket(endpoint))


def authority(config):
    """
    @return: the L{KeyRegistry} a node's fronts check HELLOs against, or
        C{None} if it binds plain sockets.
    """
    curve = _curve(config)
    return None if curve is None else curve.registry


# ZAP


def _reply(routingId, requestId, status, text, userId=b""):
    return [routingId, b"", ZAP_VERSION, requestId, status, text.encode("utf-8"), userId, b""]


def zapReply(frames, registry, domainRoles=DOMAIN_ROLES):
    """
    Decide one ZAP request.

    @param frames: the request as a ROUTER receives it: routing id, empty
        delimiter, version, request id, domain, address, identity,
        mechanism, credentials.
    @param registry: the L{KeyRegistry}.
    @param domainRoles: ZAP domain to the roles allowed there (C{None}: any);
        a domain not in it is refused.
    @return: (reply frames or C{None} if the request cannot be answered at
        all, the L{Identity} allowed or C{None}, why it was refused or
        C{None}).
    """
    if len(frames) < 8 or frames[1] != b"":
        return None, None, "malformed ZAP request"
    routingId, _, version, requestId, domain, _address, _identity, mechanism = frames[:8]
    credentials = frames[8:]
    if version != ZAP_VERSION:
        return _reply(routingId, requestId, b"500", "ZAP version 1.0 only"), None, "bad ZAP version"
    if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
        reason = f"mechanism {mechanism.decode('ascii', 'replace')} not allowed"
        return _reply(routingId, requestId, b"400", "CURVE only"), None, reason
    identity = registry.identify(credentials[0])
    if identity is None:
        return _reply(routingId, requestId, b"400", "unknown key"), None, "unknown key"
    if domain not in domainRoles:
        reason = f"unknown domain {domain.decode('ascii', 'replace')}"
        return _reply(routingId, requestId, b"400", reason), None, reason
    allowed = domainRoles[domain]
    if allowed is not None and identity.role not in allowed:
        reason = f"a {identity.role} may not connect here"
        return _reply(routingId, requestId, b"400", reason), None, reason
    return _reply(routingId, requestId, b"200", "OK", identity.nodeId.encode("utf-8")), identity, None


#: Frames a ZAP request may have (routing id, delimiter, 7 fields and the
#: mechanism's credentials).
ZAP_MAX_FRAMES = 16


class ZapHandler:
    """
    Answers libzmq's ZAP requests for one node's context, in the reactor.

    It must be started before any CURVE socket of the context binds: a
    socket with no handler to ask refuses every connection
    (C{ZAP_ENFORCE_DOMAIN}).

    @ivar counters: C{allowed}, C{denied}, C{malformed}.
    """

    def __init__(self, reactor, socketFactory, registry, domainRoles=DOMAIN_ROLES):
        self.reactor = reactor
        self.socketFactory = socketFactory
        self.registry = registry
        self.domainRoles = domainRoles
        self.counters = {"allowed": 0, "denied": 0, "malformed": 0}
        self._socket = None
        self._logBucket = None

    def start(self):
        """
        Bind C{inproc://zeromq.zap.01} on the factory's context.
        """
        self._logBucket = TokenBucket(1.0, 10.0, self.reactor.seconds())
        self._socket = self.socketFactory.socket("router", self._onRequest)
        # A ZAP request has more frames than any message of ours (9 for
        # CURVE), and comes from libzmq itself.
        self._socket.maxFrames = ZAP_MAX_FRAMES
        self._socket.bind(ZAP_ENDPOINT)
        log.info("CURVE on: {keys} authorized keys", keys=len(self.registry))

    def stop(self):
        """
        Close the socket.
        """
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _onRequest(self, frames):
        reply, identity, reason = zapReply(frames, self.registry, self.domainRoles)
        if reply is None:
            self.counters["malformed"] += 1
            return
        if identity is None:
            self.counters["denied"] += 1
            # A refused peer reconnects every 100 ms: log at a bounded rate.
            if self._logBucket.take(self.reactor.seconds()) == 0.0:
                log.warn(
                    "refused connection from {address} to {domain}: {reason} (key {key})",
                    address=_text(frames[5]), domain=_text(frames[4]), reason=reason,
                    key=_keyText(frames[8:]),
                )
        else:
            self.counters["allowed"] += 1
        if self._socket is not None:
            self._socket.send(reply)


def _text(data):
    return data.decode("utf-8", "replace")


def _keyText(credentials):
    if len(credentials) == 1 and len(credentials[0]) == 32:
        return z85.encode(credentials[0]).decode("ascii")
    return "none"
