"""``digan-bench data faces`` (aligned real-photo data sets) and ``digan-bench bench identity``
(wall time of the identity metric). Thin: parse, build the config, call the library, print."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli.common import ConfigOption, SetOption, echo_kv, parse_float_list
from digan.cli.groups import bench_app, data_app


@data_app.command("faces")
def data_faces(
    src: Optional[Path] = typer.Option(None, "--src", help="Folder of face photos (searched recursively).", file_okay=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (images/, manifest.json, run.json).", file_okay=False),
    size: Optional[int] = typer.Option(None, "--size", help="Crop side in pixels: 64, 128 or 256 (default 128)."),
    detector: Optional[str] = typer.Option(None, "--detector", help="SCRFD ONNX detector (default det_10g.onnx from $DIGAN_BENCH_MODELS or ~/.insightface/models/buffalo_l)."),
    template: Optional[str] = typer.Option(None, "--template", help="ffhq (loose GAN framing, default) or arcface (tight recognition crop)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder (only once the new one is complete)."),
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Detect, 5-point align and crop every face photo of a folder into a square data set.

    Unreadable and faceless files are skipped and counted; the manifest lists every file's
    status. An interrupted run resumes when repeated with the same options.
    """
    from dataclasses import replace

    from digan.config import apply_overrides, from_dict, load_config, to_dict
    from digan.data.faces_folder import FacesFolderConfig, build_faces_folder
    from digan.utils.progress import progress

    cfg = load_config(FacesFolderConfig, config) if config is not None else FacesFolderConfig()
    given = {"src": str(src) if src else None, "out": str(out) if out else None, "size": size,
             "detector": detector, "template": template, "force": True if force else None}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    cfg = from_dict(FacesFolderConfig, to_dict(apply_overrides(cfg, overrides)))  # validates every value
    with progress() as bar:
        task = bar.add_task("data faces", total=None, info="")

        def tick(done: int, total: int, counts: dict[str, int]) -> None:
            bar.update(task, completed=done, total=total, info=f"ok {counts.get('ok', 0)}")

        summary = build_faces_folder(cfg, on_progress=tick)
    items = {"output": summary.out, "images found": summary.total}
    items.update({k.replace("_", " "): v for k, v in summary.counts.items()})
    if summary.resumed:
        items["resumed (done before)"] = summary.resumed
    items["manifest"] = summary.manifest
    echo_kv(f"data faces: {summary.ok} aligned {cfg.size}x{cfg.size} crops ({cfg.template} template)", items)


@bench_app.command("identity")
def bench_identity(
    n_faces: int = typer.Option(1000, "--n-faces", "-n", help="Faces (each at 1 + len(yaws) views); below 1000 the time is also extrapolated."),
    yaws: str = typer.Option("-45,-30,-15,15,30,45", "--yaws", help="Rotated views in degrees (plus the frontal view)."),
    size: int = typer.Option(64, "--size", help="Image size fed to the detector."),
    batch_size: int = typer.Option(32, "--batch-size", help="Faces per rendering batch."),
    detector: Optional[str] = typer.Option(None, "--detector", help="SCRFD ONNX detector (default det_10g.onnx)."),
    recognizer: Optional[str] = typer.Option(None, "--recognizer", help="ArcFace-style ONNX model (default w600k_r50.onnx)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of face photos to time with (default: the test data's).", file_okay=False),
    device: str = typer.Option("all", "--device", help="cpu, cuda or all (cuda skipped without the onnxruntime CUDA provider)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for onnxruntime and torch."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the figures as JSON here.", dir_okay=False),
) -> None:
    """Wall time of the identity metric (detect, align, embed, cosine) for N faces x 7 poses."""
    from digan.cli.common import print_table
    from digan.errors import DiganError
    from digan.faces.bench import IdentityBenchConfig, run_identity_bench
    from digan.utils.io import write_json
    from digan.utils.progress import console
    from digan.utils.provenance import run_info

    if device not in ("all", "cpu", "cuda"):
        raise DiganError(f"bad --device {device!r}; choose cpu, cuda or all")
    cfg = IdentityBenchConfig(
        n_faces=n_faces, yaws=tuple(parse_float_list(yaws, "yaw", angle=True)), size=size, batch_size=batch_size,
        detector=detector, recognizer=recognizer, images=str(images) if images else None,
        devices=["cpu", "cuda"] if device == "all" else [device], threads=threads,
    )
    results = run_identity_bench(cfg, on_result=lambda r: console.print(
        f"{r['device']}: {r['n_faces']} faces x {r['views']} views in {r['wall_s']:.1f} s ({r['images_per_s']:.0f} images/s)"))
    rows = [[r["device"], f"{r['wall_s']:.1f}", f"{r['wall_s_1000_faces']:.0f}{'*' if r['extrapolated'] else ''}",
             f"{r['images_per_s']:.0f}", f"{r['detector_ms_per_image']:.1f}", f"{r['recognizer_ms_per_face']:.1f}"] for r in results]
    print_table(f"identity metric: {cfg.n_faces} faces x {1 + len(cfg.yaws)} views, {cfg.size} px",
                ["device", "wall s", "s/1000 faces", "img/s", "det ms", "embed ms"], rows)
    for r in results:
        console.print(
            f"{r['device']}: {r['detector']} + {r['recognizer']}, {r['threads']} threads, providers {', '.join(r['providers'])}; "
            f"align {r['align_ms_per_face']:.2f} ms/face, model load {r['load_s']:.1f} s (not in wall time); "
            f"identity {r['identity_overall']:.3f}, missed {r['missed']}"
            + ("; * = extrapolated linearly from the measured faces" if r["extrapolated"] else "")
        )
    if device == "all" and not any(r["device"] == "cuda" for r in results):
        console.print("no onnxruntime CUDA provider here: GPU figures skipped")
    if out is not None:
        write_json(out, {"benchmark": "identity", "results": results, "provenance": run_info("bench", config=cfg)})
        console.print(f"wrote {out}")
