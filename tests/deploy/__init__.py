"""Tests of the deployment files (systemd, Prometheus, Grafana) against the real tools."""
