"""An XMPP client login (slixmpp, PyPI) for the Prosody interop tests.

The peer under test is Prosody's ``mod_auth_dovecot``; the XMPP client side is a
library. :func:`xmpp_login` logs one JID in with one SASL mechanism, up to a bound
session, and reports how it ended; :func:`offered_mechanisms` reads the mechanisms
Prosody lists in its stream features.

slixmpp 1.17 expects SCRAM's server-final message (``v=...``) in ``<success/>``.
Prosody relays it as a ``<challenge/>`` instead (Dovecot's auth protocol sends it in a
CONT unless the client says ``final-resp-ok``, which mod_auth_dovecot never does), and
then sends an empty ``<success/>``: RFC 6120 §6.3.10 allows both. slixmpp verifies the
server signature in that challenge and then fails to parse the empty success, so the
SCRAM class is replaced, for these logins only, by one that accepts an empty success
once the signature has been verified (and refuses it otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support import missing_peer

SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
STREAM_NS = "http://etherx.jabber.org/streams"


@dataclass(frozen=True)
class LoginResult:
    """``ok`` after a bound session; otherwise the SASL failure's condition and text."""

    ok: bool
    condition: str = ""
    text: str = ""


def _slixmpp() -> Any:
    try:
        import slixmpp
    except ImportError:
        missing_peer("slixmpp is not installed (pip install slixmpp)")
    return slixmpp


@contextlib.contextmanager
def _scram_final_in_challenge() -> Iterator[None]:
    """Swap slixmpp's SCRAM for one that takes the server-final in a challenge."""
    from slixmpp.util.sasl import client as sasl_client
    from slixmpp.util.sasl.client import SASLMutualAuthFailed
    from slixmpp.util.sasl.mechanisms import SCRAM

    class ScramFinalInChallenge(SCRAM):
        def process_3(self, challenge: bytes) -> bytes:
            if challenge:
                result: bytes = super().process_3(challenge)
                return result
            if not self._mutual_auth:
                raise SASLMutualAuthFailed()  # type: ignore[no-untyped-call]
            return b""

    names = [name for name, cls in sasl_client.MECHANISMS.items() if cls is SCRAM]
    for name in names:
        sasl_client.MECHANISMS[name] = ScramFinalInChallenge
    try:
        yield
    finally:
        for name in names:
            sasl_client.MECHANISMS[name] = SCRAM


async def _login(port: int, jid: str, password: str, mechanism: str, timeout: float) -> LoginResult:
    slixmpp = _slixmpp()
    client = slixmpp.ClientXMPP(jid, password, sasl_mech=mechanism)
    mechanisms = client.plugin["feature_mechanisms"]
    # The test Prosody has no TLS: allow every mechanism on the bare stream.
    mechanisms.unencrypted_plain = True
    mechanisms.unencrypted_cram = True
    mechanisms.unencrypted_scram = True
    client.enable_starttls = False
    client.enable_direct_tls = False
    client.enable_plaintext = True
    outcome: asyncio.Future[LoginResult] = asyncio.get_running_loop().create_future()

    def settle(result: LoginResult) -> None:
        if not outcome.done():
            outcome.set_result(result)

    def failed(stanza: Any) -> None:
        settle(LoginResult(False, stanza["condition"], stanza["text"]))

    client.add_event_handler("session_start", lambda _: settle(LoginResult(True)))
    client.add_event_handler("failed_auth", failed)
    client.add_event_handler("failed_all_auth", lambda _: settle(LoginResult(False)))
    client.add_event_handler("disconnected", lambda _: settle(LoginResult(False, "disconnected")))
    client.connect(host="127.0.0.1", port=port)
    try:
        return await asyncio.wait_for(outcome, timeout)
    finally:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(client.disconnect(wait=1.0), 5)


def xmpp_login(
    port: int, jid: str, password: str, mechanism: str, timeout: float = 10.0
) -> LoginResult:
    """Log ``jid`` in to the Prosody on ``127.0.0.1:port`` with SASL ``mechanism``."""
    _slixmpp()
    with _scram_final_in_challenge():
        return asyncio.run(_login(port, jid, password, mechanism, timeout))


Parser = ET.XMLPullParser  # of ET.Element: what Prosody sends, element by element


def _open_stream(sock: socket.socket, domain: str, parser: Parser[ET.Element]) -> ET.Element:
    """Open a client stream on ``sock`` and return Prosody's stream features."""
    header = (
        f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
        f"xmlns='jabber:client' xmlns:stream='{STREAM_NS}'>"
    )
    sock.sendall(header.encode())
    return _next_element(sock, parser, f"{{{STREAM_NS}}}features")


def _next_element(sock: socket.socket, parser: Parser[ET.Element], *tags: str) -> ET.Element:
    """Read until an element with one of ``tags`` is complete."""
    while True:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError(f"Prosody closed the stream before {tags}")
        parser.feed(data)
        for event in parser.read_events():
            element = event[-1]
            if isinstance(element, ET.Element) and element.tag in tags:
                return element


def offered_mechanisms(port: int, domain: str, timeout: float = 10.0) -> list[str]:
    """The SASL mechanisms in the stream features Prosody sends a new client."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        features = _open_stream(sock, domain, Parser(events=("end",)))
    found = features.findall(f"{{{SASL_NS}}}mechanisms/{{{SASL_NS}}}mechanism")
    return [mech.text or "" for mech in found]


def abandon_after_first_answer(
    port: int, domain: str, mechanism: str, initial: bytes, timeout: float = 10.0
) -> str:
    """Start a SASL exchange, wait for Prosody's answer, then drop the connection.

    Returns the answer's element name (``challenge`` while the exchange is open).
    """
    parser: Parser[ET.Element] = Parser(events=("end",))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        _open_stream(sock, domain, parser)
        response = base64.b64encode(initial).decode()
        sock.sendall(f"<auth xmlns='{SASL_NS}' mechanism='{mechanism}'>{response}</auth>".encode())
        names = ("challenge", "success", "failure")
        answer = _next_element(sock, parser, *(f"{{{SASL_NS}}}{name}" for name in names))
    return answer.tag.rpartition("}")[2]
