"""``digan-bench`` command line: a thin typer app over importable library functions.

Each area registers its commands from its own module (``digan/cli/<area>.py``) so the CLI holds
no logic of its own: parse options, build a typed config, call the library, print a summary.

Errors: a :class:`digan.errors.DiganError` or a usage error (unknown option, bad value) is printed
as one line on stderr and the exit status is 2.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import typer

try:  # typer >= 0.2x vendors its own click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer uses the click package
    from click import exceptions as _cx

from digan.errors import DiganError, InputsError

app = typer.Typer(
    name="digan-bench",
    help="Train, run and benchmark 3D-aware face GANs (DIGAN, baselines, metrics, reports).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)



def _version_cb(value: bool) -> None:
    if value:
        from digan import __version__

        print(f"digan-bench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_cb, is_eager=True, help="Print the version and exit."),
) -> None:
    """Train, run and benchmark 3D-aware face GANs (DIGAN, baselines, metrics, reports)."""


# Sub-command modules: every module in digan/cli except the shared ones registers its commands
# on import (sorted by name so --help is stable). Groups used by several areas ("data", "bench")
# live in digan/cli/groups.py.
import pkgutil as _pkgutil

from digan.cli import groups as _groups  # noqa: E402,F401  (registers the shared groups first)

_SKIP = {"common", "groups", "__main__"}
for _m in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _m.name not in _SKIP and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")


#: the packages of this project: their warnings are printed as one line, ``warning: MESSAGE``
_OWN_PACKAGES = ("digan", "evaluate", "reports", "baselines")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _own_warning(filename: str) -> bool:
    """Whether a warning was raised in this project's code (not in a library it uses)."""
    try:
        rel = Path(filename).resolve().relative_to(_PROJECT_ROOT)
    except (ValueError, OSError):
        return False
    return len(rel.parts) > 1 and rel.parts[0] in _OWN_PACKAGES


def format_warning(message, category, filename, lineno, line=None) -> str:
    """This project's warnings as one line (``warning: MESSAGE``), without Python's source-line
    echo; a library's warnings keep Python's default format (file and line, to find them)."""
    if _own_warning(filename):
        return f"warning: {message}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


_default_formatwarning = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``digan-bench`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    previous = warnings.formatwarning
    warnings.formatwarning = format_warning
    try:
        return _main(args)
    finally:
        warnings.formatwarning = previous


def _main(args: list[str]) -> int:
    try:
        rv = app(args=args, prog_name="digan-bench", standalone_mode=False)
        return int(rv or 0)
    except InputsError as e:
        # one line per missing input, so that a long list stays readable and copy-pasteable
        n = len(e.problems)
        print(f"error: {n} input{'s' if n != 1 else ''} missing or unusable; nothing was run:", file=sys.stderr)
        for p in e.problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    except DiganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except _cx.NoArgsIsHelpError as e:
        # --help output for a group called without a command; not an error by itself
        if e.ctx is not None:
            print(e.ctx.get_help())
        return 0
    except _cx.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else "digan-bench"
        print(f"error: {e.format_message()} (see '{cmd} --help')", file=sys.stderr)
        return 2
    except (typer.Abort, getattr(_cx, "Abort", typer.Abort)):
        print("error: aborted", file=sys.stderr)
        return 130
    except (typer.Exit, getattr(_cx, "Exit", typer.Exit)) as e:
        return int(e.exit_code or 0)
    except _cx.ClickException as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; completed outputs were kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:
        # a file-system failure nothing above turned into a DiganError: one line, not a traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}; check that the path exists and is writable, and that the disk has room",
              file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use fewer faces or a smaller batch (--set train.batch=...), or a machine with more memory",
              file=sys.stderr)
        return 2


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
