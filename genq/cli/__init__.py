"""The `genq` command line and the process supervisor (see the README's architecture section)."""
