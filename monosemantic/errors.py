"""The one base of the errors monosemantic raises for bad input or state.

Every such error names the bad value and what was expected; the CLI catches `MonosemanticError` in
one place and prints its message as one `error:` line (exit status 2). Each stage keeps its own
subclass next to its code (`ConfigError` in config.py, `SAEFormatError` in sae/config.py, ...), which
also derives from the built-in exception it always was (ValueError, RuntimeError), so callers that
caught those still do.
"""


class MonosemanticError(Exception):
    """Bad input or state that the user can fix; the message says what and how."""
