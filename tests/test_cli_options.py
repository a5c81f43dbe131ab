"""One meaning per short option across every digan-bench command (a user who learnt ``-t`` as
``--teacher`` must not get ``--tolerance`` elsewhere), and a file-system failure is one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command

from digan.cli import app

#: long names that mean the same thing (one method or a list of them; a count of faces/samples)
SAME = {"--method": "--methods", "--n": "--n-faces"}


def _short_options() -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}

    def walk(cmd, path: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + [name])
        for p in getattr(cmd, "params", []):
            if getattr(p, "param_type_name", "") != "option":
                continue
            opts = list(p.opts) + list(p.secondary_opts)
            longs = [o for o in opts if o.startswith("--")]
            for s in (o for o in opts if o.startswith("-") and not o.startswith("--")):
                key = SAME.get(longs[0], longs[0]) if longs else "?"
                out.setdefault(s, {}).setdefault(key, []).append(" ".join(path))

    walk(get_command(app), [])
    return out


def test_each_short_option_has_one_meaning():
    opts = _short_options()
    assert {"-t", "-s", "-o", "-n", "-m"} <= set(opts)  # the walk sees the commands
    clashes = {s: d for s, d in opts.items() if len(d) > 1}
    assert not clashes, f"short options with several meanings: {clashes}"
    assert set(opts["-t"]) == {"--teacher"} and set(opts["-s"]) == {"--set"} and set(opts["-o"]) == {"--out"}


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc (a folder nobody can create entries in)")
def test_file_system_failure_is_one_error_line(capsys):
    """An OSError nothing else handled (an output folder inside /proc, which cannot be created)
    ends as one 'error:' line naming the path, exit status 2, no traceback."""
    from digan.cli import main

    rc = main(["data", "synth", "--out", "/proc/digan_bench_nope/synth", "--n", "2", "--size", "64"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "/proc/digan_bench_nope" in lines[0]


def test_own_warnings_print_as_one_line_and_library_warnings_keep_their_source(capsys):
    """A warning from this project's code reaches a user of the CLI as ``warning: MESSAGE`` (no
    source-line echo); a library's warning keeps Python's format, which says where it came from."""
    import warnings

    import digan.cli as cli
    from digan.student import build

    own = cli.format_warning(UserWarning("VGG16 weights not found"), UserWarning, build.__file__, 49, "code()")
    assert own == "warning: VGG16 weights not found\n"
    lib = cli.format_warning(UserWarning("deprecated"), UserWarning, warnings.__file__, 7, "x = 1")
    assert not lib.startswith("warning:") and f"{warnings.__file__}:7: UserWarning: deprecated" in lib and "x = 1" in lib
    # through the CLI: installed for the command, restored after it
    before = warnings.formatwarning
    seen = {}

    @cli.app.command("_warn_probe", hidden=True)
    def _probe() -> None:
        seen["fmt"] = warnings.formatwarning

    try:
        assert cli.main(["_warn_probe"]) == 0
    finally:
        cli.app.registered_commands[:] = [c for c in cli.app.registered_commands if c.name != "_warn_probe"]
    assert seen["fmt"] is cli.format_warning and warnings.formatwarning is before
