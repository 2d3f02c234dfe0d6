"""Tests of deploy/ (systemd units, installer) and authbridge.daemon.systemd."""
