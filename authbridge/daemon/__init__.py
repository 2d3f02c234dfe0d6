"""The trio shell: listeners, the per-connection server, the supervisor and its workers, systemd."""
