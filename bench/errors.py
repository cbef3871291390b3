"""User-facing errors: one line naming the input and the fix; the CLI turns them into exit code 2."""


class UserError(Exception):
    """A problem with what the user gave us (a file, a name, an argument), not a bug in the harness."""
