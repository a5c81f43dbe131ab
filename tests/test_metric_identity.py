"""Identity-across-poses metric (and the pose metric, which shares its rendering loop) on
methods built from real photos, checked against an independent computation with insightface's
``norm_crop``, a direct onnxruntime session and numpy cosines."""

from __future__ import annotations

import contextlib
import glob
import threading
import warnings

import cv2
import numpy as np
import pytest
import torch

from digan.errors import DiganError
from digan.render.types import Light
from evaluate.methods import Capabilities, Method, Rendered
from evaluate.metrics.base import EvalContext, create_metric, available_metrics

SIZE = 64
YAWS = (-30.0, -15.0, 15.0, 30.0)


class BankMethod(Method):
    """Serves pre-rendered images: ``bank[(pitch, yaw)]`` is (N,3,H,W) in [-1,1]; latents are indices."""

    def __init__(self, bank: dict, name: str = "bank"):
        self.bank = bank
        self.name = name
        self.calls: list[tuple[float, float, int]] = []

    @property
    def capabilities(self) -> Capabilities:
        n = next(iter(self.bank.values())).shape[0]
        return Capabilities(pose=True, image_size=SIZE, max_faces=n)

    def latents(self, n: int, seed: int, start: int = 0) -> torch.Tensor:
        return torch.arange(start, start + n)

    def render(self, latents, yaw=0.0, pitch=0.0, light: Light | None = None) -> Rendered:
        self.calls.append((pitch, yaw, len(latents)))
        return Rendered(image=self.bank[(float(pitch), float(yaw))][latents.long()])


def _photos(shared_data) -> np.ndarray:
    files = sorted(glob.glob(str(shared_data / "faces/ffhq/*.png"))) + sorted(glob.glob(str(shared_data / "faces/celeba_aligned/*.jpg")))[:2]
    out = []
    for f in files:
        im = cv2.imread(f)[:, :, ::-1]
        if im.shape[0] != im.shape[1]:
            im = im[20:198]
        out.append(cv2.resize(im, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def photo_heads(photos: np.ndarray, views, detector_path) -> dict:
    """Each photo as the texture of a head-shaped depth map (ellipsoid + nose) rendered by the
    project's renderer at each view: faces that really turn."""
    from digan.faces.detector import FaceDetector
    from digan.render.renderer import MeshRenderer
    from digan.render.types import View
    from digan.utils.images import from_uint8

    det = FaceDetector(detector_path, threads=2)
    kps = [f.kps for f in det.detect_best(photos)]
    s = photos.shape[1]
    ys, xs = np.mgrid[0:s, 0:s] / (s - 1) * 2 - 1
    depths = []
    for k in kps:
        k = k / (s - 1) * 2 - 1
        c = (k[:2].mean(0) + k[3:].mean(0)) / 2
        iod = np.linalg.norm(k[1] - k[0]) * 1.2
        r = ((xs - c[0]) / (1.3 * iod)) ** 2 + ((ys - c[1]) / (1.7 * iod)) ** 2
        h = np.sqrt(np.clip(1 - r, 0, 1)) * iod
        h = h + 0.3 * iod * np.exp(-(((xs - k[2, 0]) / (0.15 * iod)) ** 2 + ((ys - k[2, 1] + 0.12 * iod) / (0.3 * iod)) ** 2))
        depths.append(1.0 - h * np.tan(np.deg2rad(5)))
    depth = torch.tensor(np.stack(depths)[:, None], dtype=torch.float32)
    albedo = from_uint8(photos)
    r = MeshRenderer(image_size=s)
    return {v: r.render(depth, albedo, View.from_angles(yaw=v[1], pitch=v[0], batch=len(photos)), Light.uniform(len(photos))).image
            for v in views}


@pytest.fixture(scope="module")
def photos(shared_data, face_models):
    return _photos(shared_data)


@pytest.fixture(scope="module")
def views():
    return [(0.0, 0.0)] + [(0.0, y) for y in YAWS]


_HEADS: dict = {}


@pytest.fixture(scope="module")
def heads(photos, views, face_models):
    """Rendered once per test session (the pose metric's tests reuse it)."""
    if "heads" not in _HEADS:
        _HEADS["heads"] = photo_heads(photos, views, face_models / "det_500m.onnx")
    return _HEADS["heads"]


@pytest.fixture(scope="module")
def ignore_bank(photos, views):
    from digan.utils.images import from_uint8

    x = from_uint8(photos)
    return {v: x for v in views}


def _ctx(tmp_path, face_models, n, **kw):
    return EvalContext(
        out_dir=tmp_path, n_faces=n, seed=0, batch_size=5, yaws=YAWS,
        models={"detector": str(face_models / "det_500m.onnx"), "recognizer": str(face_models / "mobilefacenet_arcface_w128.onnx")},
        **kw,
    )


def _independent_embeddings(images: torch.Tensor, face_models) -> tuple[np.ndarray, np.ndarray]:
    """Detector keypoints -> insightface norm_crop -> raw onnxruntime session -> numpy L2 norm."""
    import onnxruntime as ort
    from insightface.utils import face_align

    from digan.faces.detector import FaceDetector
    from digan.utils.images import to_uint8

    det = FaceDetector(face_models / "det_500m.onnx", threads=2)
    sess = ort.InferenceSession(str(face_models / "mobilefacenet_arcface_w128.onnx"), providers=["CPUExecutionProvider"])
    ims = to_uint8(images)
    faces = det.detect_best(ims)
    emb = np.full((len(ims), 128), np.nan)
    for i, (im, f) in enumerate(zip(ims, faces)):
        if f is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            crop = face_align.norm_crop(im, f.kps)
        x = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        e = sess.run(None, {sess.get_inputs()[0].name: x})[0][0].astype(np.float64)
        emb[i] = e / np.linalg.norm(e)
    return emb, np.array([f is not None for f in faces])


def test_registered():
    m = available_metrics()
    assert "identity" in m and "pose" in m
    ident = create_metric("identity")
    assert ident.requires == ("pose",) and ident.unit == "cos" and ident.higher_is_better


def test_identity_matches_independent_computation(tmp_path, face_models, heads, views):
    method = BankMethod(heads, "photoheads")
    n = heads[(0.0, 0.0)].shape[0]
    adv = []
    ctx = _ctx(tmp_path, face_models, n, advance=adv.append)
    metric = create_metric("identity")
    recs = metric.compute(method, ctx)
    assert sum(adv) == metric.work_units(method, ctx) == n * len(views)
    by = {r.setting: r for r in recs}
    assert list(by) == ["yaw=-30", "yaw=-15", "yaw=15", "yaw=30", "overall"]
    e0, f0 = _independent_embeddings(heads[(0.0, 0.0)], face_models)
    all_sims = []
    for p, y in views[1:]:
        ev, fv = _independent_embeddings(heads[(p, y)], face_models)
        ok = f0 & fv
        sims = (e0[ok] * ev[ok]).sum(1)
        all_sims.append(sims)
        r = by[f"yaw={y:g}"]
        assert r.status == "ok" and r.unit == "cos" and r.higher_is_better
        assert r.stats["n"] == ok.sum() and r.stats["missed"] == (~ok).sum()
        # norm_crop estimates in float32 and may differ by one grey level in a few pixels
        assert r.value == pytest.approx(sims.mean(), abs=3e-3)
        assert r.stats["std"] == pytest.approx(sims.std(ddof=1), abs=3e-3)
        assert r.stats["median"] == pytest.approx(np.median(sims), abs=5e-3)
        assert r.stats["ci95"] == pytest.approx(1.96 * sims.std(ddof=1) / np.sqrt(len(sims)), abs=2e-3)
    flat = np.concatenate(all_sims)
    ov = by["overall"]
    assert ov.value == pytest.approx(flat.mean(), abs=3e-3) and ov.stats["n"] == len(flat)
    assert ov.n_faces == n and ov.seeds == {"latents": 0}
    cfg = ov.config
    assert cfg["align"] == "detector" and cfg["image_size"] == SIZE and cfg["yaws"] == list(YAWS)
    assert cfg["pipeline"]["recognizer"]["file"] == "mobilefacenet_arcface_w128.onnx"
    assert len(cfg["pipeline"]["recognizer"]["sha256"]) == 64 and cfg["pipeline"]["detector"]["file"] == "det_500m.onnx"
    # turning faces keep their identity better at 15 than at 30 degrees
    assert by["yaw=15"].value > by["yaw=30"].value and by["yaw=-15"].value > by["yaw=-30"].value
    assert 0.3 < ov.value < 0.99
    # how far each view turned: an independent landmark-pose reading of the same images
    from digan.faces.detector import FaceDetector
    from digan.faces.pose import estimate_pose
    from digan.utils.images import to_uint8

    det = FaceDetector(face_models / "det_500m.onnx", threads=2)

    def yaws(images):
        faces = det.detect_best(to_uint8(images))
        out = np.full(len(faces), np.nan)
        ids = [i for i, f in enumerate(faces) if f is not None]
        out[ids] = estimate_pose(np.stack([faces[i].kps for i in ids])).yaw
        return out

    y0 = yaws(heads[(0.0, 0.0)])
    num = den = 0.0
    for p, y in views[1:]:
        d = yaws(heads[(p, y)]) - y0
        d = d[np.isfinite(d)]
        assert by[f"yaw={y:g}"].stats["turn"] == pytest.approx(d.mean() / y, abs=1e-6)
        num, den = num + y * d.sum(), den + y * y * len(d)
    assert ov.stats["turn"] == pytest.approx(num / den, abs=1e-6)
    assert 0.5 < ov.stats["turn"] < 1.5  # these heads really turn
    assert "turn" in cfg


def test_pose_ignoring_method_gets_identity_one(tmp_path, face_models, ignore_bank):
    from evaluate.engine import apply_record_floors

    method = BankMethod(ignore_bank, "static")
    recs = create_metric("identity").compute(method, _ctx(tmp_path, face_models, 6))
    for r in recs:
        assert r.value == pytest.approx(1.0, abs=1e-5)
        assert r.stats["turn"] == 0.0  # the same image at every yaw: the same landmarks
    # ... and that perfect score is flagged, not reported as identity across poses
    assert apply_record_floors(recs, 0.5, 0.5)
    assert {r.status for r in recs} == {"warn"}
    assert all(r.reason.startswith("renders turn only 0.00x the asked yaw") for r in recs)


def test_view_turn_closed_form():
    from evaluate.metrics.identity import view_turn

    front = np.array([2.0, -1.0, 0.0, np.nan, 1.0])
    req = np.array([30.0, 30.0, -30.0, 30.0, 0.0])
    view = front + 0.4 * req + np.array([3.0, -3.0, 0.0, 0.0, 5.0])
    ok = np.array([True, True, True, True, True])
    # the NaN frontal reading and the yaw-0 view drop out; slope through the origin of the rest
    d, r = (view - front)[:3], req[:3]
    assert view_turn(front, view, req, ok) == pytest.approx((r * d).sum() / (r * r).sum())
    assert view_turn(front, view, req, ok) == pytest.approx(0.4)
    # one requested yaw: the mean turn over that yaw
    assert view_turn(front[:2], view[:2], req[:2], ok[:2]) == pytest.approx(0.4)
    assert view_turn(front, view, req, np.zeros(5, bool)) is None
    assert view_turn(front[4:], view[4:], req[4:], ok[4:]) is None


def test_record_floors_combine_and_follow_the_floor():
    from evaluate.engine import apply_record_floors
    from evaluate.records import Record

    def rec(**stats):
        return Record("m", "identity", value=0.9, unit="cos", higher_is_better=True, stats=dict(stats))

    rs = [rec(n=10, missed=0, turn=0.5), rec(n=10, missed=0, turn=0.49), rec(n=2, missed=18, turn=0.2),
          rec(n=10, missed=0), rec(turn=0.1, std=0.1)]
    assert apply_record_floors(rs, 0.5, 0.5)
    assert [r.status for r in rs] == ["ok", "warn", "warn", "ok", "warn"]  # exactly at the floor is ok
    assert rs[1].reason.startswith("renders turn only 0.49x the asked yaw (< 0.5, set by min_turn)")
    assert "only 2 of 20 views had a detected face" in rs[2].reason and "renders turn only 0.20x" in rs[2].reason
    # a lower floor (a resumed run) turns the warnings back, reasons cleared; the detection one stays
    assert apply_record_floors(rs, 0.5, 0.0)
    assert [r.status for r in rs] == ["ok", "ok", "warn", "ok", "ok"]
    assert rs[1].reason == "" and rs[2].reason.startswith("only 2 of 20") and "turn" not in rs[2].reason
    assert not apply_record_floors(rs, 0.5, 0.0)  # nothing changes the second time
    # a metric's own warning is not the floors' to clear
    own = Record("m", "identity", value=0.9, status="warn", reason="the metric's own caveat", stats={"n": 9, "missed": 1, "turn": 1.0})
    apply_record_floors([own], 0.5, 0.5)
    assert own.status == "warn" and own.reason == "the metric's own caveat"


def test_other_identity_scores_low_and_misses_are_counted(tmp_path, face_models, photos, views):
    from digan.utils.images import from_uint8

    x = from_uint8(photos)
    blank = x.clone()
    blank[3] = 1.0  # a white image: no face
    bank = {(0.0, 0.0): x}
    for i, v in enumerate(views[1:]):
        bank[v] = blank if v == (0.0, 30.0) else torch.roll(x, 1 + i, 0)  # somebody else
    bank[(0.0, 0.0)] = x.clone()
    bank[(0.0, 0.0)][5] = -1.0  # black: the frontal view of face 5 is missed for every yaw
    recs = {r.setting: r for r in create_metric("identity").compute(BankMethod(bank), _ctx(tmp_path, face_models, 12))}
    assert recs["yaw=-30"].value < 0.35  # different people
    assert recs["yaw=-30"].stats["missed"] == 1 and recs["yaw=-30"].stats["missed_frontal"] == 1
    assert recs["yaw=30"].stats["missed"] == 2 and recs["yaw=30"].stats["missed_view"] == 1
    assert recs["yaw=30"].value == pytest.approx(1.0, abs=1e-5)  # same images otherwise
    assert recs["overall"].stats["missed"] == 4 + 1
    assert recs["overall"].stats["n"] == 12 * 4 - 5


def test_a_yaw_with_no_detected_face_is_na_not_a_failed_measurement(tmp_path, face_models, photos, views):
    from digan.utils.images import from_uint8

    x = from_uint8(photos)
    bank = {v: x for v in views}
    bank[(0.0, 30.0)] = torch.ones_like(x)  # every render at +30 deg is blank: no face to detect
    recs = {r.setting: r for r in create_metric("identity").compute(BankMethod(bank), _ctx(tmp_path, face_models, 8))}
    r30 = recs["yaw=30"]
    assert r30.status == "n/a" and r30.value is None
    assert "detection rate 0%" in r30.reason and r30.stats["missed_view"] == 8
    assert recs["yaw=-30"].status == "ok" and recs["yaw=-30"].value == pytest.approx(1.0, abs=1e-5)


def test_all_missed_is_an_error_naming_the_fix(tmp_path, face_models, photos, views):
    white = torch.ones(4, 3, SIZE, SIZE)
    method = BankMethod({v: white for v in views})
    with pytest.raises(DiganError, match="align=fixed"):
        create_metric("identity").compute(method, _ctx(tmp_path, face_models, 4))
    # with the fixed template there is no detection: every face is embedded
    recs = create_metric("identity", align="fixed").compute(method, _ctx(tmp_path, face_models, 4))
    assert recs[-1].value == pytest.approx(1.0, abs=1e-5) and recs[-1].config["align"] == "fixed"
    assert "fixed_kps" in recs[-1].config["pipeline"]


def test_pitch_settings_and_fixed_yaw_methods(tmp_path, face_models, ignore_bank):
    bank = dict(ignore_bank)
    x = bank[(0.0, 0.0)]
    for y in YAWS:
        bank[(10.0, y)] = x
    ctx = _ctx(tmp_path, face_models, 4, pitches=(0.0, 10.0))
    recs = create_metric("identity").compute(BankMethod(bank), ctx)
    assert [r.setting for r in recs][:2] == ["pitch=0,yaw=-30", "pitch=0,yaw=-15"]
    assert "pitch=10,yaw=30" in [r.setting for r in recs]

    class FixedYaws(BankMethod):
        @property
        def capabilities(self):
            return Capabilities(pose=True, image_size=SIZE, max_faces=4, yaws=(0.0, 15.0, 30.0))

    m = FixedYaws(ignore_bank)
    recs = create_metric("identity").compute(m, _ctx(tmp_path, face_models, 10))
    assert [r.setting for r in recs] == ["yaw=15", "yaw=30", "overall"]
    assert recs[0].config["yaws_unavailable"] == [-30.0, -15.0] and recs[0].n_faces == 4
    assert create_metric("identity").applicable(m, _ctx(tmp_path, face_models, 10)) is None


def test_not_applicable_without_pose_control(tmp_path, face_models, ignore_bank):
    class TwoD(BankMethod):
        @property
        def capabilities(self):
            return Capabilities(pose=False, reasons={"pose": "a 2D GAN has no pose control"})

    for name in ("identity", "pose"):
        assert create_metric(name).applicable(TwoD(ignore_bank), _ctx(tmp_path, face_models, 4)) == "a 2D GAN has no pose control"


class _ThreadRanks:
    """Two 'ranks' in threads: shard like torchrun, gather through a barrier."""

    def __init__(self, world: int):
        self.world = world
        self.slots: list = [None] * world
        self.barrier = threading.Barrier(world)

    def ctx(self, base: EvalContext, rank: int) -> EvalContext:
        from digan.utils.dist import shard_range

        parent = self

        class Ctx(EvalContext):
            def shard(self, n):
                return shard_range(n, rank, parent.world)

            def gather(self, t):
                parent.slots[rank] = t
                parent.barrier.wait()
                out = torch.cat(list(parent.slots), 0)
                parent.barrier.wait()
                return out

        return Ctx(**{f: getattr(base, f) for f in base.__dataclass_fields__})


def test_sharded_run_equals_single_process(tmp_path, face_models, heads):
    n = 10
    base = _ctx(tmp_path, face_models, n)
    single = create_metric("identity").compute(BankMethod(heads), base)
    ranks = _ThreadRanks(2)
    out: list = [None, None]
    methods = [BankMethod(heads), BankMethod(heads)]

    def run(r):
        out[r] = create_metric("identity").compute(methods[r], ranks.ctx(base, r))

    th = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    [t.start() for t in th]
    [t.join(timeout=120) for t in th]
    assert out[0] is not None and out[1] is not None
    # each rank rendered only its half
    assert sum(c[2] for c in methods[0].calls) == 5 * 5 and sum(c[2] for c in methods[1].calls) == 5 * 5
    for a, b, c in zip(single, out[0], out[1]):
        assert a.setting == b.setting == c.setting
        assert a.value == pytest.approx(b.value, abs=1e-6) and b.value == c.value
        assert a.stats["n"] == b.stats["n"]


@contextlib.contextmanager
def _registered_bank(name: str, bank: dict):
    """``bank`` served as the benchmark method ``name`` for the duration of the block, then
    removed, so the registry stays as other tests expect it."""
    import evaluate.methods as em
    from evaluate.methods import register_method

    register_method(name, help="test only")(lambda arg, **options: BankMethod(bank, name))
    try:
        yield
    finally:
        em._REGISTRY.pop(name, None)


def _engine_config(tmp_path, face_models, method: str, **kw):
    """The identity and pose metrics on 4 faces of ``method``, with the small face models."""
    from evaluate.engine import RunConfig

    return RunConfig(
        methods=[method], metrics=["identity", "pose"], n_faces=4, yaws=YAWS, device="cpu",
        models={"detector": str(face_models / "det_500m.onnx"), "recognizer": str(face_models / "mobilefacenet_arcface_w128.onnx")},
        out=str(tmp_path / "res"), **kw,
    )


def test_engine_runs_identity_and_pose_with_fixed_alignment_option(tmp_path, face_models, ignore_bank):
    """Through the benchmark engine: records written per method/metric, metric options reach the
    constructor, the alignment mode is recorded."""
    from evaluate.engine import run_benchmark
    from evaluate.records import load_records

    with _registered_bank("test-photobank", ignore_bank):
        run_benchmark(_engine_config(tmp_path, face_models, "test-photobank", metric_options={"identity": {"align": "fixed"}}),
                      echo=False)
    recs = load_records(tmp_path / "res")
    ident = [r for r in recs if r.metric == "identity"]
    pose = [r for r in recs if r.metric == "pose"]
    assert len(ident) == len(YAWS) + 1 and len(pose) == len(YAWS) + 2
    assert all(r.status == "ok" for r in ident + pose)
    assert ident[-1].config["align"] == "fixed" and ident[-1].value == pytest.approx(1.0, abs=1e-5)
    assert pose[-1].setting == "overall" and pose[-1].config["pipeline"]["align"] == "detector"


def test_engine_flags_identity_of_renders_that_do_not_turn_and_follows_min_turn_on_resume(tmp_path, face_models, ignore_bank):
    """The static bank's renders never turn: through the engine its identity (1.0) is kept but
    marked warn with the reason, its pose is not; a resumed run with min_turn=0 clears the flag
    without recomputing."""
    from evaluate.engine import run_benchmark
    from evaluate.records import load_records

    cfg = _engine_config(tmp_path, face_models, "test-static")
    with _registered_bank("test-static", ignore_bank):
        run_benchmark(cfg, echo=False)
        ident = [r for r in load_records(tmp_path / "res") if r.metric == "identity"]
        assert len(ident) == len(YAWS) + 1 and {r.status for r in ident} == {"warn"}
        assert all(r.stats["turn"] == 0.0 and "set by min_turn" in r.reason for r in ident)
        assert ident[-1].value == pytest.approx(1.0, abs=1e-5)  # the number is kept, with its caveat
        assert {r.status for r in load_records(tmp_path / "res") if r.metric == "pose"} == {"ok"}
        cfg.min_turn = 0.0
        again = run_benchmark(cfg, echo=False)
        assert {r.status for r in again} == {"ok"} == {r.status for r in load_records(tmp_path / "res")}


def test_bench_identity_reports_consistent_figures(shared_data, face_models, capsys):
    from digan.cli import main
    from digan.faces.bench import IdentityBenchConfig, run_identity_bench

    res = run_identity_bench(IdentityBenchConfig(
        n_faces=3, yaws=(-15.0, 15.0), size=64, batch_size=2, detector=str(face_models / "det_500m.onnx"),
        recognizer=str(face_models / "mobilefacenet_arcface_w128.onnx"), images=str(shared_data / "faces/ffhq"),
        devices=["cpu"], threads=2))
    assert len(res) == 1
    r = res[0]
    assert r["images"] == 9 and r["views"] == 3 and r["extrapolated"]
    assert r["wall_s_1000_faces"] == pytest.approx(r["wall_s"] * 1000 / 3)
    assert r["images_per_s"] == pytest.approx(9 / r["wall_s"])
    # mirrored photos for +15, unchanged for -15: identity between 1 and the mirrored similarity
    assert 0.5 < r["identity_overall"] <= 1.0 + 1e-6 and r["missed"] == 0
    rc = main(["bench", "identity", "-n", "2", "--yaws", "15", "--device", "cpu", "--images", str(shared_data / "faces/ffhq"),
               "--detector", str(face_models / "det_500m.onnx"), "--recognizer", "missing_model.onnx"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing_model.onnx" in err and "buffalo_l.zip" in err
