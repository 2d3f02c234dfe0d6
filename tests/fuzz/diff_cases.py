"""Cases for the differential fuzzer: valid conversations, then byte-level mutations.

A case is a small program, not fixed bytes: a CRAM-MD5 or SCRAM answer is computed from
the challenge the server under test sent for that request id, so the same case drives
real Dovecot and authbridge through the same exchange although their challenges differ.
Mutations are described by positions and operations (line, field, fraction of a length),
never by bytes, and are applied to each server's rendering the same way.

Everything derives from ``random.Random(f"{seed}:{index}")``: a case is replayed from its
seed and index alone.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass, field

#: (user, password) pairs from protocol/users.passwd, right and wrong, plus nonsense names.
ACCOUNTS: tuple[tuple[bytes, bytes], ...] = (
    (b"userx", b"secret"),
    (b"userx", b"wrong"),
    (b"USERX", b"secret"),
    (b"alice@example.com", b"alicepass"),
    (b"weird", b'p@ss w0rd;with"odd%chars'),
    (b"cramx", b"cram-password"),
    (b"md5x", b"md5pass"),
    (b"nologinx", b"secret"),
    (b"fieldx", b"secret"),
    (b"netx", b"secret"),
    (b"ripx", b"secret"),
    (b"netformsx", b"secret"),
    (b"net6x", b"secret"),
    (b"renamex", b"secret"),
    (b"nopassx", b"anything"),
    (b"failx", b"secret"),
    (b"expandx", b"secret"),
    (b"nodelayx", b"secret"),
    (b"nodelayx", b"wrong"),
    (b"reasonx", b"secret"),
    (b"nobody", b"secret"),
    (b"", b"secret"),
    (b"bad name", b"secret"),
    (b"caf\xc3\xa9", b"secret"),
    (b"bad\xffname", b"secret"),
)

PARAMS: tuple[bytes, ...] = (
    b"rip=192.0.2.7", b"rip=127.0.0.1", b"lip=127.0.0.1", b"rport=4242", b"lport=25",
    b"secured", b"secured=tls", b"nologin", b"session=abc", b"no-penalty", b"debug",
    b"valid-client-cert", b"cert_username=x", b"real_rip=192.0.2.9", b"local_name=mx",
    b"rip=0300.0.2.7", b"rip=192.0.519", b"rip=::ffff:192.0.2.7", b"rip=[::1]", b"lip=0x7f.1",
)  # fmt: skip

SPECIAL_BYTES = (b"\x00", b"\x01", b"\r", b"\t", b"\n", b" ", b"=", b"\xff", b"\x80", b"\xc3")
NUMBERS = (
    b"0", b"00", b"1", b"007", b"4294967295", b"4294967296", b"18446744073709551616",
    b"99999999999999999999999999", b"-1", b"+1", b"1 ", b" 1", b"0x1", b"1\x00", b"",
)  # fmt: skip
INVALID_UTF8 = (b"\xff", b"\x80", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80")
BAD_BASE64 = (b"!", b"=", b"==", b"A", b"AB", b"\x00", b"\xff", b"-", b"_", b" ", b"\x01t")


@dataclass
class ScramClient:
    """The client half of one SCRAM exchange (RFC 5802, no channel binding)."""

    digest: str
    user: bytes
    password: bytes
    nonce: bytes
    server_signature: bytes | None = None

    @property
    def first_bare(self) -> bytes:
        name = self.user.replace(b"=", b"=3D").replace(b",", b"=2C")
        return b"n=" + name + b",r=" + self.nonce

    def client_first(self) -> bytes:
        return b"n,," + self.first_bare

    def client_final(self, server_first: bytes | None) -> bytes:
        fields = _scram_fields(server_first or b"")
        try:
            salt = base64.b64decode(fields.get(b"s", b""), validate=True)
            iterations = int(fields.get(b"i", b"0"))
        except ValueError:
            salt, iterations = b"", 0
        if not fields.get(b"r") or not 0 < iterations <= 100000:
            return b"c=biws,r=" + self.nonce + b"x,p=" + base64.b64encode(b"\0" * 20)
        salted = hashlib.pbkdf2_hmac(self.digest, self.password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self.digest).digest()
        stored_key = hashlib.new(self.digest, client_key).digest()
        without_proof = b"c=biws,r=" + fields[b"r"]
        assert server_first is not None
        message = self.first_bare + b"," + server_first + b"," + without_proof
        signature = hmac.new(stored_key, message, self.digest).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.digest).digest()
        self.server_signature = hmac.new(server_key, message, self.digest).digest()
        return without_proof + b",p=" + base64.b64encode(proof)


def _scram_fields(message: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for item in message.split(b","):
        key, sep, value = item.partition(b"=")
        if sep:
            out.setdefault(key, value)
    return out


@dataclass
class ConvState:
    """What one connection has learned: the last challenge per id, SCRAM clients."""

    challenges: dict[bytes, bytes] = field(default_factory=dict)
    scram: dict[bytes, ScramClient] = field(default_factory=dict)


#: Renders one client line (without LF) from what the server has said so far.
Render = Callable[[ConvState], bytes]


def fixed(line: bytes) -> Render:
    return lambda state: line


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def volatile(render: Render) -> Render:
    """Mark a line whose bytes depend on the server's challenge (see ``byte_mutated``)."""
    render.volatile = True  # type: ignore[attr-defined]
    return render


def byte_mutated(
    step_index: int, steps: int, renders: list[Render], mutations: list[Mutation]
) -> bool:
    """Whether a byte-level mutation hits a write holding a challenge-dependent line.

    Such a line differs per server (another digest, another nonce), so the same byte
    change means different things to each: the case cannot be compared. Mutations of
    the decoded payload keep their meaning and do not count, except a byte put into
    the base64 text: what a server's lenient decoder makes of the digest around it
    (and echoes as the user name) differs per challenge.
    """
    if not any(getattr(r, "volatile", False) for r in renders):
        return False
    return any(
        m.op not in STEP_OPS
        and (m.op == "payload-bad-base64" or not m.op.startswith("payload-"))
        and _pick(steps, m.step) == step_index
        for m in mutations
    )


def cram_answer(rid: bytes, user: bytes, password: bytes) -> Render:
    @volatile
    def render(state: ConvState) -> bytes:
        challenge = state.challenges.get(rid, b"")
        digest = hmac.new(password, challenge, hashlib.md5).hexdigest().encode()
        return b"CONT\t" + rid + b"\t" + b64(user + b" " + digest)

    return render


def scram_first(rid: bytes, client: ScramClient, prefix: bytes) -> Render:
    def render(state: ConvState) -> bytes:
        # Each connection gets its own copy: it remembers that server's signature.
        state.scram[rid] = dataclasses.replace(client)
        return prefix + b64(client.client_first())

    return render


def scram_final(rid: bytes) -> Render:
    @volatile
    def render(state: ConvState) -> bytes:
        client = state.scram.get(rid)
        if client is None:
            return b"CONT\t" + rid + b"\t" + b64(b"c=biws,r=x,p=AAAA")
        return b"CONT\t" + rid + b"\t" + b64(client.client_final(state.challenges.get(rid)))

    return render


Steps = list[list[Render]]


def _auth(rid: bytes, mech: bytes, rng: random.Random) -> bytes:
    params = [b"service=smtp"]
    params += rng.sample(PARAMS, rng.choice((0, 0, 1, 2)))
    rng.shuffle(params)
    return b"\t".join([b"AUTH", rid, mech, *params])


def conversation(rid: bytes, rng: random.Random) -> Steps:
    """One valid exchange for request ``rid``: a list of client writes."""
    user, password = rng.choice(ACCOUNTS)
    kind = rng.choice(("plain", "plain-cont", "login", "login-ir", "cram", "scram1", "scram256"))
    if kind == "plain":
        authzid = rng.choice((b"", b"", user, b"other"))
        resp = b"\tresp=" + b64(authzid + b"\0" + user + b"\0" + password)
        return [[fixed(_auth(rid, b"PLAIN", rng) + resp)]]
    if kind == "plain-cont":
        resp = rng.choice((b"", b"\tresp=", b"\tresp"))
        cont = b"CONT\t" + rid + b"\t" + b64(b"\0" + user + b"\0" + password)
        return [[fixed(_auth(rid, b"PLAIN", rng) + resp)], [fixed(cont)]]
    if kind in ("login", "login-ir"):
        cont_user = b"CONT\t" + rid + b"\t" + b64(user)
        cont_pass = b"CONT\t" + rid + b"\t" + b64(password)
        if kind == "login-ir":
            return [[fixed(_auth(rid, b"LOGIN", rng) + b"\tresp=" + b64(user))], [fixed(cont_pass)]]
        return [[fixed(_auth(rid, b"LOGIN", rng))], [fixed(cont_user)], [fixed(cont_pass)]]
    if kind == "cram":
        resp = rng.choice((b"", b"", b"\tresp=", b"\tresp=" + b64(user), b"\tresp=="))
        return [[fixed(_auth(rid, b"CRAM-MD5", rng) + resp)], [cram_answer(rid, user, password)]]
    digest = "sha1" if kind == "scram1" else "sha256"
    mech = b"SCRAM-SHA-1" if kind == "scram1" else b"SCRAM-SHA-256"
    nonce = b64(rng.randbytes(12))
    client = ScramClient(digest, user, password, nonce)
    final_ack = fixed(b"CONT\t" + rid + b"\t")
    if rng.random() < 0.5:
        first = scram_first(rid, client, _auth(rid, mech, rng) + b"\tresp=")
        return [[first], [scram_final(rid)], [final_ack]]
    first = scram_first(rid, client, b"CONT\t" + rid + b"\t")
    return [[fixed(_auth(rid, mech, rng))], [first], [scram_final(rid)], [final_ack]]


def handshake(rng: random.Random) -> list[Render]:
    minor = rng.choice((b"0", b"0", b"1", b"2", b"4"))  # 4: compat must answer as 2.3
    return [
        fixed(b"VERSION\t1\t" + minor),
        fixed(b"CPID\t" + str(rng.randrange(1, 99999)).encode()),
    ]


def valid_program(rng: random.Random) -> Steps:
    """A handshake and one to three exchanges, sometimes interleaved, sometimes cancelled."""
    count = rng.choice((1, 1, 1, 2, 2, 3))
    ids = [str(rng.choice((1, 2, 3, 7, 42, 1000 + i))).encode() for i in range(count)]
    convs = [conversation(rid, rng) for rid in dict.fromkeys(ids)]
    steps: Steps = [handshake(rng)]
    if rng.random() < 0.5:
        steps[0] += convs[0].pop(0)  # pipelined with the handshake, as Exim does
    while any(convs):
        conv = rng.choice([c for c in convs if c])
        steps.append(conv.pop(0))
    if rng.random() < 0.1:
        steps.append([fixed(b"CANCEL\t" + ids[0])])
        steps.append(conversation(ids[0], rng)[0])
    return [s for s in steps if s]


# ------------------------------------------------------------------------------ mutations


@dataclass(frozen=True)
class Mutation:
    """One change to the rendered client writes; applied the same way to each server."""

    op: str
    step: float  # fraction: which step (write)
    line: float  # fraction: which line in it
    where: float  # fraction: position in the line / field
    arg: bytes = b""
    field: int = 0

    def describe(self) -> str:
        return f"{self.op}(step~{self.step:.2f} line~{self.line:.2f} at~{self.where:.2f} " + (
            f"field {self.field} {self.arg[:24]!r})"
        )


LINE_OPS = (
    "insert", "replace", "delete", "truncate", "field-number", "field-insert", "field-replace",
    "field-drop", "field-dup", "payload-insert", "payload-replace", "payload-truncate",
    "payload-append", "payload-bad-base64", "payload-utf8", "dup-line", "drop-line",
    "swap-lines", "no-lf", "crlf", "long-field", "long-line", "split-line",
)  # fmt: skip
STEP_OPS = ("swap-steps", "dup-step", "merge-steps", "drop-step")


def random_mutation(rng: random.Random) -> Mutation:
    op = rng.choice(LINE_OPS + STEP_OPS)
    arg = b""
    if op in ("insert", "replace", "field-insert", "field-replace", "payload-insert",
              "payload-replace", "payload-append"):  # fmt: skip
        arg = rng.choice((*SPECIAL_BYTES, b"\x00\x00", b"\x01t", b"\x010", b"A", b"\x7f"))
    elif op == "field-number":
        arg = rng.choice(NUMBERS)
    elif op == "payload-utf8":
        arg = rng.choice(INVALID_UTF8)
    elif op == "payload-bad-base64":
        arg = rng.choice(BAD_BASE64)
    elif op in ("long-field", "long-line"):
        arg = str(rng.choice((16000, 16382, 16383, 16384, 16385, 17000, 40000))).encode()
    return Mutation(op, rng.random(), rng.random(), rng.random(), arg, rng.randrange(8))


def _pick(items_len: int, fraction: float) -> int:
    return min(int(fraction * items_len), items_len - 1)


def _payload_span(line: bytes) -> tuple[int, int] | None:
    """Where the base64 payload of an AUTH ``resp=`` or a CONT sits in ``line``."""
    if line.startswith(b"CONT\t"):
        start = line.find(b"\t", 5)
        return (start + 1, len(line)) if start >= 0 else None
    pos = line.rfind(b"\tresp=")
    return (pos + 6, len(line)) if pos >= 0 else None


def _mutate_payload(payload: bytes, m: Mutation) -> bytes:
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        data = payload
    pos = int(m.where * (len(data) + 1))
    if m.op == "payload-insert":
        data = data[:pos] + m.arg + data[pos:]
    elif m.op == "payload-replace":
        data = data[:pos] + m.arg + data[pos + 1 :]
    elif m.op == "payload-truncate":
        data = data[:pos]
    elif m.op == "payload-append":
        data = data + m.arg
    elif m.op == "payload-utf8":
        data = data[:pos] + m.arg + data[pos:]
    elif m.op == "payload-bad-base64":
        encoded = base64.b64encode(data)
        cut = int(m.where * (len(encoded) + 1))
        return encoded[:cut] + m.arg + encoded[cut:]
    return base64.b64encode(data)


def _mutate_field(line: bytes, m: Mutation) -> bytes:
    fields = line.split(b"\t")
    index = m.field % len(fields)
    value = fields[index]
    pos = int(m.where * (len(value) + 1))
    if m.op == "field-number":
        fields[index] = m.arg
    elif m.op == "field-insert":
        fields[index] = value[:pos] + m.arg + value[pos:]
    elif m.op == "field-replace":
        fields[index] = value[:pos] + m.arg + value[pos + 1 :]
    elif m.op == "field-drop":
        del fields[index]
    elif m.op == "field-dup":
        fields.insert(index, value)
    elif m.op == "long-field":
        fields.insert(index, b"x=" + b"A" * int(m.arg))
    return b"\t".join(fields)


def _mutate_line(lines: list[bytes], m: Mutation) -> list[bytes]:
    """``lines`` carry their terminators, so a mutation can remove or add them."""
    if not lines:
        return lines
    i = _pick(len(lines), m.line)
    line = lines[i]
    body, end = (line[:-1], line[-1:]) if line.endswith(b"\n") else (line, b"")
    pos = int(m.where * (len(body) + 1))
    op = m.op
    if op == "insert":
        body = body[:pos] + m.arg + body[pos:]
    elif op == "replace":
        body = body[:pos] + m.arg + body[pos + 1 :]
    elif op == "delete":
        body = body[:pos] + body[pos + 1 :]
    elif op == "truncate":
        return [*lines[:i], body[:pos]]
    elif op.startswith("field-") or op == "long-field":
        body = _mutate_field(body, m)
    elif op.startswith("payload-"):
        span = _payload_span(body)
        if span is not None:
            body = body[: span[0]] + _mutate_payload(body[span[0] : span[1]], m) + body[span[1] :]
    elif op == "dup-line":
        return [*lines[: i + 1], line, *lines[i + 1 :]]
    elif op == "drop-line":
        return lines[:i] + lines[i + 1 :]
    elif op == "swap-lines" and i + 1 < len(lines):
        return [*lines[:i], lines[i + 1], line, *lines[i + 2 :]]
    elif op == "no-lf":
        end = b""
    elif op == "crlf":
        body += b"\r"
    elif op == "long-line":
        body += b"\t" + b"A" * int(m.arg)
    elif op == "split-line":
        body = body[:pos] + b"\n" + body[pos:]
    lines[i] = body + end
    return lines


def apply_step_mutations(steps: Steps, mutations: list[Mutation]) -> Steps:
    """Reorder, duplicate, merge or drop whole writes (before anything is rendered)."""
    steps = [list(s) for s in steps]
    for m in mutations:
        if m.op not in STEP_OPS or len(steps) < 2:
            continue
        i = _pick(len(steps), m.step)
        j = min(i + 1, len(steps) - 1)
        if m.op == "swap-steps" and i != j:
            steps[i], steps[j] = steps[j], steps[i]
        elif m.op == "dup-step":
            steps.insert(i, list(steps[i]))
        elif m.op == "merge-steps" and i != j:
            steps[i] = steps[i] + steps.pop(j)
        elif m.op == "drop-step":
            del steps[i]
    return steps


def apply_line_mutations(
    step_index: int, steps: int, data: list[bytes], mutations: list[Mutation]
) -> bytes:
    """Mutate one rendered write (its lines, LF included) and join it."""
    lines = list(data)
    for m in mutations:
        if m.op in STEP_OPS or _pick(steps, m.step) != step_index:
            continue
        lines = _mutate_line(lines, m)
    return b"".join(lines)


@dataclass(eq=False)
class Case:
    seed: int
    index: int
    steps: Steps
    mutations: list[Mutation]

    def describe(self) -> str:
        muts = ", ".join(m.describe() for m in self.mutations) or "none"
        return f"case seed={self.seed} index={self.index} mutations: {muts}"


def make_case(seed: int, index: int) -> Case:
    rng = random.Random(f"{seed}:{index}")
    steps = valid_program(rng)
    count = rng.choice((0, 1, 1, 1, 2, 2, 3))
    mutations = [random_mutation(rng) for _ in range(count)]
    steps = apply_step_mutations(steps, mutations)
    return Case(seed, index, steps, mutations)
