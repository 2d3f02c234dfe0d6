#!/usr/bin/env bash
# Install the real peers authbridge is tested against (Debian 12, as root):
# Exim 4 heavy, Dovecot 2.3, swaks, socat, and Postfix unpacked beside them (and groff
# to render the generated man pages, redis-server for the fleet tests, which start their own;
# slapd and ldap-utils for the LDAP store tests, which start their own slapd, and the
# headers python-ldap builds against; prosody with prosody-modules for mod_auth_dovecot,
# a third-party auth-client the interop tests start as their own subprocess).
# Idempotent: packages already present are not reinstalled.
#
# Postfix and exim4 both claim mail-transport-agent in dpkg, so Postfix's .deb is
# only unpacked into $AUTHBRIDGE_POSTFIX_ROOT (default /opt/authbridge-peers/postfix)
# and its system accounts are created the way its postinst would.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-peers.sh: must run as root" >&2; exit 1; }

PFROOT=${AUTHBRIDGE_POSTFIX_ROOT:-/opt/authbridge-peers/postfix}
PACKAGES="exim4-daemon-heavy dovecot-core swaks socat openssl libnet-ssleay-perl
  libio-socket-ssl-perl iproute2 procps fail2ban prometheus systemd postgresql python3-venv
  groff-base redis-server slapd ldap-utils libldap2-dev libsasl2-dev python3-dev gcc
  prosody prosody-modules dovecot-ldap dovecot-mysql dovecot-pgsql"
export DEBIAN_FRONTEND=noninteractive

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done

if [ -n "$missing" ]; then
  debconf-set-selections <<'SEL'
exim4-config exim4/dc_eximconfig_configtype select local delivery only; not on a network
exim4-config exim4/use_split_config boolean false
SEL
  # Never let a package start its daemon on this machine.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x "$PFROOT/usr/lib/postfix/sbin/master" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download postfix >/dev/null 2>&1) || { apt-get update -qq; (cd "$tmp" && apt-get download postfix); }
  rm -rf "$PFROOT.new"; mkdir -p "$PFROOT.new"
  dpkg-deb -x "$tmp"/postfix_*.deb "$PFROOT.new"
  rm -rf "$PFROOT" "$tmp"; mv "$PFROOT.new" "$PFROOT"
fi
getent group postdrop >/dev/null || addgroup --system postdrop >/dev/null
getent group postfix >/dev/null || addgroup --system postfix >/dev/null
getent passwd postfix >/dev/null || adduser --system --home /var/spool/postfix --no-create-home \
  --disabled-password --ingroup postfix postfix >/dev/null
echo "peers: exim $(exim -bV | sed -n '1s/Exim version \([^ ]*\).*/\1/p'), dovecot $(dovecot --version | cut -d' ' -f1), postfix in $PFROOT"
