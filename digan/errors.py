"""One exception type for every user-facing failure.

Library code raises :class:`DiganError` with a one-line message that names the problem *and the
fix* ("... not found: put it at X or pass --teacher PATH"). The CLI prints it as a single line and
exits with status 2; tests assert on it. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class DiganError(Exception):
    """A user-facing error whose message is one line naming the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class MissingAssetError(DiganError):
    """A file that cannot ship with the package (weights, detector, data) is missing."""

    def __init__(self, what: str, expected: str, how: str = ""):
        msg = f"{what} not found at {expected}"
        if how:
            msg += f"; {how}"
        super().__init__(msg)


class NonFiniteLossError(DiganError):
    """Training produced a NaN/Inf loss; the last good checkpoint was kept."""


class InputsError(DiganError):
    """Several inputs (data sets, model files, checkpoints) are missing or unusable; found before
    any slow work. ``problems`` holds one deduplicated line per problem; the CLI prints each on its
    own line and exits 2."""

    def __init__(self, problems: list[str], what: str = "input"):
        self.problems = list(dict.fromkeys(" ".join(str(p).split()) for p in problems))
        n = len(self.problems)
        super().__init__(f"{n} {what}{'s' if n != 1 else ''} missing or unusable; nothing was run: " + "; ".join(self.problems))
