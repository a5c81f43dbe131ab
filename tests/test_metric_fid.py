"""FID / KID: formulas against direct numpy/scipy references, the clean-fid pipeline with a small
feature extractor built here, reference-statistics caching, offline Inception detection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from digan.errors import DiganError, MissingAssetError
from digan.utils.seeding import latents as seeded_latents
from evaluate.engine import RunConfig, run_benchmark
from evaluate.methods import Capabilities, Method, Rendered, register_method
from evaluate.metrics import fid as F
from evaluate.metrics.base import EvalContext
from evaluate.records import load_records

# ------------------------------------------------------------------ direct references


def direct_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = (a - mu1).T @ (a - mu1) / (len(a) - 1)
    s2 = (b - mu2).T @ (b - mu2) / (len(b) - 1)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of the definition with k(a, b) = (a.b/d + 1)^3, by explicit loops."""
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_fid_matches_direct_formula_and_closed_form_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 2.0]), np.array([0.5, 0.0, -1.0, 1.0])
    v1, v2 = np.array([1.0, 2.0, 0.5, 1.5]), np.array([2.0, 1.0, 0.5, 3.0])
    a = mu1 + rng.standard_normal((40000, 4)) * np.sqrt(v1)
    b = mu2 + rng.standard_normal((40000, 4)) * np.sqrt(v2)
    got = F.fid_from_features(a, b)
    assert got == pytest.approx(direct_fid(a, b), rel=1e-9)
    closed = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert got == pytest.approx(closed, rel=0.03)
    # a full (non-diagonal) covariance: sample statistics -> direct formula
    L = rng.standard_normal((6, 6))
    c = rng.standard_normal((500, 6)) @ L.T
    e = rng.standard_normal((700, 6)) * 2 + 1
    assert F.fid_from_features(c, e) == pytest.approx(direct_fid(c, e), rel=1e-8)
    assert F.fid_from_features(c, c) == pytest.approx(0.0, abs=1e-6)


def test_kid_matches_definition_on_full_sets_and_subsets():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((12, 5))
    r = rng.standard_normal((12, 5)) + 0.7
    kid, std, m = F.kid_from_features(g, r, num_subsets=1, max_subset_size=1000, seed=3)
    assert m == 12 and std == 0.0
    # a subset of the full size is a permutation; the unbiased MMD^2 does not depend on order
    assert kid == pytest.approx(direct_mmd2(r, g), rel=1e-10)

    # several subsets of size 7: same draws as clean-fid (ref subset first, then generated)
    g2 = rng.standard_normal((15, 5))
    r2 = rng.standard_normal((20, 5)) * 1.5
    kid, std, m = F.kid_from_features(g2, r2, num_subsets=4, max_subset_size=7, seed=11)
    rs = np.random.RandomState(11)
    vals = []
    for _ in range(4):
        x = r2[rs.choice(20, 7, replace=False)]
        y = g2[rs.choice(15, 7, replace=False)]
        vals.append(direct_mmd2(x, y))
    assert m == 7
    assert kid == pytest.approx(np.mean(vals), rel=1e-10)
    assert std == pytest.approx(np.std(vals, ddof=1), rel=1e-10)
    # and clean-fid's own single call with the same seed gives the same mean
    from cleanfid.fid import kernel_distance

    state = np.random.get_state()
    np.random.seed(11)
    ref_val = kernel_distance(g2, r2, num_subsets=4, max_subset_size=7)
    np.random.set_state(state)
    assert kid == pytest.approx(ref_val, rel=1e-10)


def test_kid_restores_global_rng_and_is_reproducible():
    rng = np.random.default_rng(2)
    g, r = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = F.kid_from_features(g, r, num_subsets=5, max_subset_size=10, seed=0)
    assert (np.random.get_state()[1] == before).all()
    assert F.kid_from_features(g, r, num_subsets=5, max_subset_size=10, seed=0) == a
    # same distribution: the unbiased estimate is near zero; shifted: clearly positive
    same = F.kid_from_features(rng.standard_normal((400, 4)), rng.standard_normal((400, 4)), 20, 200, 0)[0]
    shifted = F.kid_from_features(rng.standard_normal((400, 4)), rng.standard_normal((400, 4)) + 1, 20, 200, 0)[0]
    assert abs(same) < 0.1 and shifted > 5.0


# ------------------------------------------------------------------ the image pipeline


def test_clean_resize_is_pil_bicubic_on_float_channels():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
    out = F.clean_resize(img)
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    for b in range(2):
        for c in range(3):
            ref = np.asarray(Image.fromarray(img[b, :, :, c].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC))
            np.testing.assert_allclose(out[b, c].numpy(), ref.clip(0, 255), atol=1e-4)


def test_reference_image_square_crop_and_resize(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :5] = 255   # left strip: cropped away
    arr[:, 5:15] = 100  # centre square
    arr[:, 15:] = 50   # right strip: cropped away
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = F.prepare_reference_image(tmp_path / "a.png", 10)
    assert out.shape == (10, 10, 3) and (out == 100).all()
    out = F.prepare_reference_image(tmp_path / "a.png", 4)
    assert out.shape == (4, 4, 3) and (out == 100).all()  # Lanczos of a constant is that constant


# ------------------------------------------------------------------ end to end with a tiny extractor


def mean_colour_extractor(ctx=None) -> F.FeatureExtractor:
    return F.FeatureExtractor(name="meancolour", key="meancolour-v1", fn=lambda x: x.mean(dim=(2, 3)))


F.register_feature_extractor("test-meancolour", mean_colour_extractor)


class ColourMethod(Method):
    """Constant-colour 8x8 faces; colour i = tanh(z_i[:3])."""

    name = "colours"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(image_size=8)

    def latents(self, n, seed, start=0):
        return seeded_latents(n, 3, seed, start)

    def render(self, latents, yaw=0.0, pitch=0.0, light=None):
        c = torch.tanh(latents)
        return Rendered(image=c[:, :, None, None].expand(-1, 3, 8, 8).clone())

    def colours_uint8(self, n, seed):
        c = torch.tanh(self.latents(n, seed))
        return ((c.clamp(-1, 1) + 1) * 127.5).round().numpy()


register_method("colours", help="test: constant colours")(lambda arg, **kw: ColourMethod())


def _ref_folder(tmp_path, n=25, seed=5):
    rng = np.random.default_rng(seed)
    folder = tmp_path / "ref"
    (folder / "sub").mkdir(parents=True)
    cols = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    for i, c in enumerate(cols):
        # 16 px references: resized to the method's 8 px first (a constant stays constant)
        Image.fromarray(np.tile(c, (16, 16, 1))).save(folder / ("sub" if i % 2 else "") / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder, cols.astype(np.float64)


def test_fid_kid_end_to_end_against_direct_computation(tmp_path):
    folder, ref_cols = _ref_folder(tmp_path)
    # reference files are sorted by path: recompute the order the metric sees
    files = F.list_reference_files(folder)
    order = [int(p.stem) for p in files]
    ref_cols = ref_cols[order]
    cfg = RunConfig(methods=["colours"], metrics=["fid", "kid"], n_faces=30, batch_size=7, device="cpu",
                    data={"ref": str(folder)}, out=str(tmp_path / "res"), cache_dir=str(tmp_path / "cache"),
                    metric_options={"fid": {"dataset": "ref", "extractor": "test-meancolour"},
                                    "kid": {"dataset": "ref", "extractor": "test-meancolour", "num_subsets": 10,
                                            "max_subset_size": 20}})
    recs = {r.metric: r for r in run_benchmark(cfg, echo=False)}
    gen_cols = ColourMethod().colours_uint8(30, 0)
    fid = recs["fid"]
    assert fid.status == "ok"
    assert fid.value == pytest.approx(direct_fid(gen_cols, ref_cols), rel=1e-4)
    assert fid.stats["n"] == 30 and fid.stats["n_ref"] == 25 and fid.n_faces == 30
    assert fid.dataset == "ref [meancolour features, not Inception]"
    assert fid.config["inception"] is False and fid.config["reference"]["n_files"] == 25
    assert fid.config["mode"] == "clean" and fid.config["view"] == {"yaw": 0.0, "pitch": 0.0}
    assert fid.higher_is_better is False
    kid = recs["kid"]
    rs = np.random.RandomState(0)
    vals = []
    for _ in range(10):
        x = ref_cols[rs.choice(25, 20, replace=False)]
        y = gen_cols[rs.choice(30, 20, replace=False)]
        vals.append(direct_mmd2(x, y))
    assert kid.value == pytest.approx(np.mean(vals), rel=1e-3)
    assert kid.stats["subset_size"] == 20 and kid.stats["subsets"] == 10
    # the stats were cached once, keyed by file list, size, extractor
    cached = list((tmp_path / "cache" / "fid-ref").glob("*.npz"))
    assert len(cached) == 1
    assert load_records(tmp_path / "res")


def test_reference_cache_hit_and_invalidation(tmp_path):
    folder, _ = _ref_folder(tmp_path, n=6)
    ctx = EvalContext(out_dir=tmp_path, cache_dir=tmp_path / "cache", batch_size=4)
    ext = mean_colour_extractor()
    a, info = F.reference_features(folder, 8, ext, ctx)
    assert info["cached"] is False and a.shape == (6, 3)
    b, info2 = F.reference_features(folder, 8, ext, ctx)
    assert info2["cached"] is True and np.array_equal(a, b) and info2["cache_key"] == info["cache_key"]
    # another resolution or extractor: another key
    _, info3 = F.reference_features(folder, 4, ext, ctx)
    assert info3["cache_key"] != info["cache_key"]
    ext2 = F.FeatureExtractor(name="x", key="other", fn=ext.fn)
    assert F.reference_features(folder, 8, ext2, ctx)[1]["cache_key"] != info["cache_key"]
    # a new file changes the file-list hash and the features
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "zzz.png")
    c, info4 = F.reference_features(folder, 8, ext, ctx)
    assert info4["cached"] is False and c.shape == (7, 3) and info4["files_hash"] != info["files_hash"]
    # max_reference keeps the first N sorted files
    d, info5 = F.reference_features(folder, 8, ext, ctx, max_reference=3)
    assert d.shape == (3, 3) and np.array_equal(d, c[:3])


def test_missing_reference_is_listed_before_the_run(tmp_path):
    """Issue 13: a missing reference folder is found by the engine's input check, before any
    work, instead of an error record after the slow part."""
    from digan.errors import InputsError

    cfg = RunConfig(methods=["colours"], metrics=["fid"], n_faces=4, device="cpu", out=str(tmp_path / "res"),
                    cache_dir=str(tmp_path / "cache"), metric_options={"fid": {"extractor": "test-meancolour"}})
    with pytest.raises(InputsError) as e:
        run_benchmark(cfg, echo=False)
    (p,) = e.value.problems
    assert "--data ffhq=FOLDER" in p and not (tmp_path / "res" / "records").exists()


def test_inception_missing_names_file_folder_and_url(tmp_path):
    if (F._cleanfid_cache_dir() / F.INCEPTION_FILE).is_file():
        pytest.skip("the Inception file is installed on this machine")
    ctx = EvalContext(out_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(MissingAssetError) as e:
        F.find_inception(ctx)
    msg = str(e.value)
    assert F.INCEPTION_FILE in msg and "/tmp/inception-2015-12-05.pt" in msg and F.INCEPTION_URL in msg
    assert "--model inception=PATH" in msg and "\n" not in msg
    ctx.models["inception"] = str(tmp_path / "nope.pt")
    with pytest.raises(MissingAssetError, match="nope.pt"):
        F.find_inception(ctx)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / F.INCEPTION_FILE).write_bytes(b"x")
    ctx.models.clear()
    assert F.find_inception(ctx) == tmp_path / "cache" / F.INCEPTION_FILE
    # the metric fails with that message instead of downloading
    folder, _ = _ref_folder(tmp_path, n=3)
    ctx2 = EvalContext(out_dir=tmp_path, cache_dir=tmp_path / "empty", n_faces=4, data={"ffhq": str(folder)})
    with pytest.raises(MissingAssetError):
        F.FID().compute(ColourMethod(), ctx2)


def test_randproj_fallback_is_fixed_and_labelled():
    a, b = F.random_projection_extractor(), F.random_projection_extractor()
    x = torch.rand(3, 3, 299, 299) * 255
    assert torch.equal(a.fn(x), b.fn(x)) and a.fn(x).shape == (3, 64)
    assert a.inception is False and "randproj" in a.key
    with pytest.raises(DiganError, match="unknown FID feature extractor 'nope'"):
        F.FID(extractor="nope")._extractor(EvalContext(out_dir="."))


def test_synthetic_set_uses_its_images_folder(tmp_path):
    root = tmp_path / "synth"
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(root / "images" / f"{i:06d}.png")
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "contact_sheet.png")
    (root / "manifest.json").write_text('{"format": "digan-synth-heads"}')
    assert [p.name for p in F.list_reference_files(root)] == ["000000.png", "000001.png", "000002.png"]
    (root / "manifest.json").write_text('{"format": "other"}')
    assert len(F.list_reference_files(root)) == 4  # a plain folder: every image counts
