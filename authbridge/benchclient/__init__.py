"""Load client for any Dovecot auth-client socket (``authbridge bench``).

It speaks the protocol through :mod:`authbridge.core.wire`, so the benchmark exercises the
same framing the server uses, and spreads connections over several OS processes so
that one Python process is not the bottleneck when measuring a fast server.
"""
