"""Interop tests: real Exim, Postfix and doveadm against authbridge and Dovecot."""
