"""A throwaway OpenLDAP ``slapd`` for tests: an mdb database in a fresh directory.

Runs Debian's ``/usr/sbin/slapd`` in the foreground (``-d``) with a ``slapd.conf`` of
its own, listening on 127.0.0.1 only (``ldap://`` with StartTLS, ``ldaps://``) and on
an ``ldapi://`` socket in its directory; users are loaded with the real ``ldapadd``.
The stats log (``-d 256``) goes to a file, so tests can count connections. Stopped,
paused and resumed by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.parse
from pathlib import Path

from tests.support import free_tcp_port, require_binary, wait_until
from tests.support.tls import TlsFiles, make_self_signed

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "admin-secret"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PW = "reader-secret"
PEOPLE = f"ou=people,{SUFFIX}"
AD_BASE = f"cn=Users,dc=corp,{SUFFIX}"
#: Why an LDAP test cannot run without the [ldap] extra.
PYTHON_LDAP_MISSING = "python-ldap is not installed (pip install '.[ldap]')"
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")

#: sAMAccountName and userPrincipalName as Active Directory matches them (without
#: case), and an AD-like ``user`` class: Debian's msuser.schema has no matching rules.
AD_SCHEMA = """
attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.2 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.3 NAME 'mailNologin'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'user' SUP inetOrgPerson STRUCTURAL
  MAY ( sAMAccountName $ userPrincipalName ) )
objectclass ( 1.3.6.1.4.1.55555.2.2 NAME 'mailAccount' SUP top AUXILIARY
  MAY ( mailNologin ) )
"""

BASE_LDIF = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: {READER_DN}
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: reader
userPassword: {READER_PW}

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: dc=corp,{SUFFIX}
objectClass: domain
dc: corp

dn: {AD_BASE}
objectClass: organizationalRole
cn: Users
"""


class Slapd:
    """One slapd; ``start()`` it, ``add(ldif)`` entries, ``stop()`` / ``pause()`` it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_tcp_port()
        self.ldaps_port = free_tcp_port()
        self.socket = base / "ldapi"
        self.log = base / "slapd.log"
        self.conf = base / "slapd.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls: TlsFiles | None = None

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldapi_uri(self) -> str:
        return "ldapi://" + urllib.parse.quote(str(self.socket), safe="")

    def configure(self) -> Slapd:
        self.data.mkdir(parents=True, exist_ok=True)
        self.tls = make_self_signed(self.base / "tls", "127.0.0.1")
        (self.base / "ad.schema").write_text(AD_SCHEMA)
        includes = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
        self.conf.write_text(
            includes
            + f"include {self.base / 'ad.schema'}\n"
            + "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            + f"pidfile {self.base / 'slapd.pid'}\nargsfile {self.base / 'slapd.args'}\n"
            + f"TLSCertificateFile {self.tls.cert}\nTLSCertificateKeyFile {self.tls.key}\n"
            + "database mdb\n"
            + f'suffix "{SUFFIX}"\nrootdn "{ADMIN_DN}"\nrootpw {ADMIN_PW}\n'
            + f"directory {self.data}\nmaxsize 10485760\n"
            + "index objectClass,uid,sAMAccountName eq\n"
            + "access to attrs=userPassword\n"
            + f'  by dn.exact="{READER_DN}" read\n  by anonymous auth\n  by * none\n'
            + "access to *\n  by users read\n  by * none\n"
        )
        return self

    def start(self) -> Slapd:
        slapd = require_binary("slapd")
        urls = f"{self.uri}/ {self.ldaps_uri}/ {self.ldapi_uri}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [slapd, "-d", "256", "-f", str(self.conf), "-h", urls],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        whoami = require_binary("ldapwhoami")

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: {self.log.read_text()[-2000:]}")
            probe = subprocess.run(
                [whoami, "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", ADMIN_PW],
                capture_output=True,
                timeout=10,
                check=False,
            )
            return probe.returncode == 0

        wait_until(answers, timeout=30, what="slapd answering a bind", interval=0.1)
        return self

    def add(self, ldif: str) -> None:
        """Entries added as the admin with the real ldapadd."""
        self._run("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        self._run("ldapmodify", ldif)

    def _run(self, tool: str, ldif: str) -> None:
        subprocess.run(
            [require_binary(tool), "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", ADMIN_PW],
            input=ldif.encode(),
            capture_output=True,
            timeout=30,
            check=True,
        )

    def accepted(self) -> int:
        """Connections slapd accepted so far (its stats log's ACCEPT lines)."""
        return self.log.read_text(errors="replace").count(" ACCEPT from ")

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # a paused slapd cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def make_slapd(base: Path) -> Slapd:
    """A started slapd with the base entries (people, the AD-style container)."""
    slapd = Slapd(base).configure().start()
    slapd.add(BASE_LDIF)
    return slapd


def person_ldif(uid: str, password: str, *extra: str) -> str:
    """An inetOrgPerson under ou=people with ``userPassword`` as given (a hash or not)."""
    lines = [
        f"dn: uid={uid},{PEOPLE}",
        "objectClass: inetOrgPerson",
        "objectClass: mailAccount",
        f"uid: {uid}",
        f"cn: {uid}",
        f"sn: {uid}",
        f"mail: {uid}@example.org",
        f"userPassword: {password}",
        *extra,
    ]
    return "\n".join(lines) + "\n\n"


def ad_user_ldif(cn: str, sam: str, password: str) -> str:
    """An AD-style user: the DN names the display name, the login is sAMAccountName."""
    return (
        f"dn: cn={cn},{AD_BASE}\nobjectClass: user\ncn: {cn}\nsn: {cn.split()[-1]}\n"
        f"sAMAccountName: {sam}\nuserPrincipalName: {sam}@corp.example.org\n"
        f"userPassword: {password}\n\n"
    )
