"""The embedded demo config."""
