"""Operations: Prometheus metrics, structured logs, systemd notifications and signal handling."""
