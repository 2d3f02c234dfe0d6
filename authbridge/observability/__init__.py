"""Logs, authentication events, Prometheus metrics, and the per-batch bookkeeping and
contained-error reports that feed them."""
