"""The ``restore-demo`` preset: ``digan-bench run --preset restore-demo`` measures restoration of
damaged heads with the bundled tiny models in a few CPU minutes.

* **data**: :data:`RESTORE_SYNTH_COUNT` synthetic 64 px heads of seed :data:`RESTORE_SYNTH_SEED`
  (held out: the bundled teacher was trained on seed 0, and the restoration settings were chosen
  on seed 7), one view per identity, every head damaged (``damage_prob=1``) and each part
  missing with probability 0.5 (``missing_prob``), with undamaged twins; generated once into
  ``CACHE/demo/``;
* **methods**: the bundled DIGAN student, and the bundled LiftGAN student
  ``digan/assets/tiny_liftgan_64.pt`` when that file exists (otherwise the restoration table
  shows LiftGAN as n/a with the reason);
* **metric**: ``restore`` over :data:`RESTORE_N_FACES` faces with
  :data:`RESTORE_INVERSION_STEPS` inversion steps.
"""

from __future__ import annotations

from pathlib import Path

from evaluate.engine import RunConfig

__all__ = ["restore_demo_config", "ensure_restore_synth", "liftgan_asset", "RESTORE_N_FACES", "RESTORE_SYNTH_SEED"]

RESTORE_N_FACES = 16
RESTORE_SYNTH_COUNT = 16
RESTORE_SYNTH_SEED = 1
RESTORE_INVERSION_STEPS = 100
LIFTGAN_ASSET = "tiny_liftgan_64.pt"


def liftgan_asset() -> Path:
    from evaluate.presets import assets_dir

    return assets_dir() / LIFTGAN_ASSET


def ensure_restore_synth(cache_dir: str | Path, count: int = RESTORE_SYNTH_COUNT, seed: int = RESTORE_SYNTH_SEED) -> Path:
    """The restoration demo set under ``cache_dir/demo`` (generated atomically when missing)."""
    from digan.errors import DiganError

    out = Path(cache_dir).expanduser() / "demo" / f"restore-64px-{count}-seed{seed}"
    if out.is_dir():
        return out
    from digan.data.synth import SynthConfig, generate_synth
    from digan.utils.progress import err_console

    err_console.print(f"restore-demo: generating {count} damaged synthetic heads with twins into {out} (once)")
    generate_synth(out, config=SynthConfig(n=count, size=64, seed=seed, views_per_identity=1, damage_prob=1.0,
                                           missing_prob=0.5, twins=True))
    if not out.is_dir():
        raise DiganError(f"the synthetic data generator did not create {out}; rerun or report a bug")
    return out


def restore_demo_config(cache_dir: str | Path = "~/.cache/digan-bench", prepare: bool = True) -> RunConfig:
    """The ``restore-demo`` preset (module docstring)."""

    methods = ["digan"]
    if liftgan_asset().is_file():
        methods.append(f"liftgan:{liftgan_asset()}")
    data = {"restore": str(ensure_restore_synth(cache_dir))} if prepare else {}
    return RunConfig(
        methods=methods,
        metrics=["restore"],
        n_faces=RESTORE_N_FACES,
        seed=0,
        batch_size=8,
        device="auto",
        data=data,
        out="results/restore-demo",
        cache_dir=str(cache_dir),
        metric_options={"restore": {"dataset": "restore", "inversion_steps": RESTORE_INVERSION_STEPS}},
        preset="restore-demo",
    )
