"""Named run presets for ``digan-bench run --preset NAME``.

``demo`` (the README's main command, ``digan-bench run --preset demo``) is the embedded default
that finishes on a laptop CPU in a few minutes with nothing downloaded:

* **models**: the bundled tiny 64 px teacher ``digan/assets/tiny_teacher_64.pt`` and tiny DIGAN
  student ``digan/assets/tiny_student_64.pt`` (methods ``teacher`` and ``digan``);
* **data**: the synthetic ground-truth heads (64 px, :data:`DEMO_SYNTH_COUNT` faces, seed 1, held out from
  the seed-0 set the bundled teacher was trained on),
  generated once into ``CACHE/demo/`` by the synth library function when missing; they are the
  FID/KID reference images and the SIDE/MAD ground truth;
* **metrics**: fid, kid, identity, pose, side, mad, speed over :data:`DEMO_N_FACES` faces
  (SIDE/MAD over :data:`DEMO_3D_FACES` synthetic faces, reconstructed by teacher inversion with
  :data:`DEMO_INVERSION_STEPS` steps instead of the default 150);
* **face models** (identity, pose): ``det_500m.onnx`` and ``mobilefacenet_arcface_w128.onnx``
  from ``$DIGAN_BENCH_TEST_DATA/face-models`` or ``../shared/data/face-models`` beside the
  checkout when present, else the metrics' documented default paths;
* **FID/KID features**: clean-fid's Inception when its file is present (see
  :func:`evaluate.metrics.fid.find_inception`); offline, the demo-only ``randproj`` extractor
  (a fixed seeded random projection of pooled pixels). Such records say
  ``[randproj features, not Inception]`` in their ``dataset`` field and ``config.inception =
  false``, and the summary marks them with ``*``: they are not FID numbers.

Every value can still be overridden on the command line (``--n-faces``, ``--set ...``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from digan.errors import DiganError, MissingAssetError
from evaluate.engine import RunConfig

__all__ = [
    "available_presets",
    "build_preset",
    "demo_config",
    "bundled_config",
    "assets_dir",
    "ensure_demo_synth",
    "shared_face_models",
    "DEMO_N_FACES",
    "DEMO_SYNTH_COUNT",
    "DEMO_SYNTH_SIZE",
    "DEMO_SYNTH_SEED",
]

DEMO_N_FACES = 64
DEMO_SYNTH_COUNT = 200
DEMO_SYNTH_SIZE = 64
DEMO_SYNTH_SEED = 1  # held out: the bundled tiny teacher was trained on seed 0
DEMO_3D_FACES = 16  # SIDE/MAD reconstruct by teacher inversion: the slowest step on a CPU
DEMO_INVERSION_STEPS = 30  # the digan method's default is 150
DEMO_METRICS = ["fid", "kid", "identity", "pose", "side", "mad", "speed"]
DEMO_YAWS = (-30.0, -15.0, 15.0, 30.0)


def assets_dir() -> Path:
    """``digan/assets`` inside the installed package."""
    return Path(__file__).resolve().parents[1] / "digan" / "assets"


def shared_face_models() -> Path | None:
    """The small real face models folder for tests and the demo, when present."""
    env = os.environ.get("DIGAN_BENCH_TEST_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    p = root / "face-models"
    return p if (p / "det_500m.onnx").is_file() else None


def ensure_demo_synth(cache_dir: str | Path, count: int = DEMO_SYNTH_COUNT, size: int = DEMO_SYNTH_SIZE,
                      seed: int = DEMO_SYNTH_SEED) -> Path:
    """The demo's synthetic set under ``cache_dir/demo``; generated (atomically) when missing."""
    out = Path(cache_dir).expanduser() / "demo" / f"synth-{size}px-{count}-seed{seed}"
    if out.is_dir():
        return out
    from digan.data.synth import generate_synth
    from digan.utils.progress import err_console

    err_console.print(f"demo: generating {count} synthetic {size}px faces into {out} (once)", soft_wrap=True, markup=False)
    generate_synth(out, n=count, size=size, seed=seed)
    if not out.is_dir():
        raise DiganError(f"the synthetic data generator did not create {out}; rerun with --force or report a bug")
    return out


def demo_config(cache_dir: str | Path = "~/.cache/digan-bench", prepare: bool = True,
                methods: list[str] | None = None) -> RunConfig:
    """The ``demo`` preset (module docstring). ``prepare`` checks assets and makes the data.

    ``methods`` replaces the demo's ``digan, teacher`` (``digan-bench run --methods digan,liftgan``
    without data or model options runs them on the demo's data, see :func:`bundled_config`);
    each method then checks its own files."""
    from evaluate.metrics.fid import find_inception
    from evaluate.metrics.base import EvalContext

    assets = assets_dir()
    teacher = assets / "tiny_teacher_64.pt"
    student = assets / "tiny_student_64.pt"
    if prepare and methods is None:
        missing = [p for p in (teacher, student) if not p.is_file()]
        if missing:
            raise MissingAssetError(
                "bundled demo model(s) " + ", ".join(p.name for p in missing), str(missing[0].parent),
                "reinstall digan-bench (the tiny models ship with the package) or run the demo with your own "
                "checkpoints: --methods digan:STUDENT.pt,teacher:TEACHER.pt",
            )
    cache = Path(cache_dir).expanduser()
    data: dict[str, str] = {}
    if prepare:
        data["synth"] = str(ensure_demo_synth(cache))
    models: dict[str, str] = {}
    fm = shared_face_models()
    if fm is not None:
        models["detector"] = str(fm / "det_500m.onnx")
        rec = fm / "mobilefacenet_arcface_w128.onnx"
        if rec.is_file():
            models["recognizer"] = str(rec)
    try:
        find_inception(EvalContext(out_dir=Path("."), cache_dir=cache, models=models))
        extractor = "inception"
    except MissingAssetError:
        extractor = "randproj"  # demo-only, labelled in every record (module docstring)
    feat = {"dataset": "synth", "extractor": extractor}
    return RunConfig(
        methods=list(methods) if methods is not None else ["digan", "teacher"],
        metrics=list(DEMO_METRICS),
        n_faces=DEMO_N_FACES,
        seed=0,
        batch_size=16,
        device="auto",
        yaws=DEMO_YAWS,
        pitches=(0.0,),
        data=data,
        models=models,
        out="results/demo",
        cache_dir=str(cache_dir),
        method_options={"digan": {"inversion_steps": DEMO_INVERSION_STEPS},
                        "liftgan": {"inversion_steps": DEMO_INVERSION_STEPS}},
        metric_options={"fid": dict(feat), "kid": dict(feat),
                        "side": {"dataset": "synth", "max_faces": DEMO_3D_FACES},
                        "mad": {"dataset": "synth", "max_faces": DEMO_3D_FACES},
                        "speed": {"warmup": 1, "batches": 3, "multiview_yaws": [-30.0, 30.0]}},
        preset="demo",
    )


def bundled_config(methods: list[str], cache_dir: str | Path = "~/.cache/digan-bench",
                   metrics: list[str] | None = None) -> RunConfig:
    """``digan-bench run --methods ...`` with no data set, model file, preset or config file: the
    methods' bundled tiny models (``digan``: ``tiny_student_64.pt``, ``liftgan``:
    ``tiny_liftgan_64.pt``, ``teacher``: ``tiny_teacher_64.pt``) on the demo's synthetic faces
    and face models, with the demo's metric settings (a couple of CPU minutes); results go to
    the default ``results/``. Real ``--data``/``--model`` options select the paper protocol
    (:class:`RunConfig` defaults) instead."""
    # the synthetic set is made (once, in the cache) only when a metric reads it
    needs_data = metrics is None or any(m in ("fid", "kid", "side", "mad") for m in metrics)
    cfg = demo_config(cache_dir, prepare=needs_data, methods=methods)
    if metrics is not None:
        cfg.metrics = list(metrics)
    cfg.out = RunConfig().out
    cfg.preset = "bundled"
    return cfg


_PRESETS: dict[str, tuple[Callable[..., RunConfig], str]] = {
    "demo": (demo_config, "tiny bundled teacher + student, synthetic data, all metrics; a few CPU minutes"),
    "restore-demo": (lambda **kw: __import__("evaluate.restore_demo", fromlist=["x"]).restore_demo_config(**kw),
                     "restoration of damaged synthetic heads with the bundled student (evaluate/restore_demo.py)"),
}


def available_presets() -> dict[str, str]:
    """``{name: one-line description}``."""
    return {k: v[1] for k, v in _PRESETS.items()}


def build_preset(name: str, **kw: object) -> RunConfig:
    """The RunConfig of preset ``name`` (preparing its data; ``kw`` e.g. ``cache_dir``);
    unknown names list the valid ones."""
    if name not in _PRESETS:
        raise DiganError(f"unknown preset '{name}'; choose from: {', '.join(_PRESETS)}")
    return _PRESETS[name][0](**kw)
