"""The error a command raises for what it finds wrong itself (the daemon's refusals come as OpError)."""


class CliError(Exception):
    """`main` prints it as `budget: <message>` and exits with status 1."""
