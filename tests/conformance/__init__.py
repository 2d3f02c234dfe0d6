"""Conformance corpus runner: transcripts vs real Dovecot 2.3 and authbridge."""
