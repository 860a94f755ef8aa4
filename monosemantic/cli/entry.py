"""The `monosemantic` console script (and `python -m monosemantic`): the first thing a command shows.

Importing the command line (torch, transformers, matplotlib) takes 2-3 s on a laptop CPU before any
command can say what it loads (cli/progress.py). On a terminal, a line naming the command goes out
before those imports and is erased as the command's own output begins, so that nothing is silent for
more than a moment; piped or redirected output, `-q`, `--help` and `--version` are left exactly as
the command writes them. This module imports nothing of the package until that line is out.
"""

from __future__ import annotations

import sys

VALUE_FLAGS = {"--threads"}  # global options that take a value (cli/main.py build_parser)
GROUPS = {"mathlm", "bench"}  # commands whose action is the next word
NO_LINE = {"-q", "--quiet", "-h", "--help", "--version"}
ERASE = "\r\033[K"  # back to the start of the line, then clear it


def command_of(argv: list[str]) -> str | None:
    """The command a command line runs ('ablate', 'mathlm eval'), or None (none given, or quiet/help)."""
    if NO_LINE & set(argv):
        return None
    words, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUE_FLAGS:
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
            if len(words) == 2 or words[0] not in GROUPS:
                break
    return " ".join(words) or None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = command_of(argv)
    early = command is not None and sys.stderr.isatty()
    if early:
        sys.stderr.write(f"{command}: starting (loading torch and the package) ...")
        sys.stderr.flush()
    from monosemantic.cli.main import main as run

    if early:
        sys.stderr.write(ERASE)
        sys.stderr.flush()
    return run(argv)
