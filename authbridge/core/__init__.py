"""The protocol core, sans-I/O: the wire format, the session state machine, replies,
verdicts and the SASL mechanisms."""
