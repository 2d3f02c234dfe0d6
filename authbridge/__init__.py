"""authbridge: the Dovecot auth-client protocol, served from Dovecot's own user stores."""

__version__ = "0.1.0"
