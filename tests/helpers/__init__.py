"""Small helpers shared by the system tests (processes, ports, readiness)."""
