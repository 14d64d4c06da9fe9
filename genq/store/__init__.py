"""The persistence layer of genq (see the README's architecture section)."""
