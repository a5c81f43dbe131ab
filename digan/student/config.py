"""Typed configuration of the DIGAN student, its ablation variants and presets.

``StudentConfig`` = ``model`` (architecture) + ``loss`` (weights and loss networks) + ``train``
(optimiser and schedule) + ``renderer``. Every value can be overridden on the command line with
``--set loss.flip=0`` etc. Defaults are LiftedGAN's where the DIGAN paper gives no value
(see ``../shared/design/DIGAN-NOTES.md``), except ``train.steps`` = 30,000 (paper).

Ablation variants (method ``digan@<variant>`` in the benchmark) are the table :data:`VARIANTS`:
each is a list of overrides applied on top of a base config. Presets (``--preset``) are the
table :data:`PRESETS` (``paper``: defaults; ``tiny``: a narrow 64 px student for CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from digan.config import apply_overrides
from digan.errors import DiganError

__all__ = [
    "ModelConfig",
    "LossConfig",
    "TrainConfig",
    "StudentRendererConfig",
    "StudentConfig",
    "VARIANTS",
    "PRESETS",
    "variant_overrides",
    "make_config",
]


@dataclass
class ModelConfig:
    """Architecture of G3D (see :mod:`digan.student.networks` and :mod:`digan.student.model`)."""

    name: str = "digan"  # model registry name (digan.student.registry): digan, liftgan, ...
    # DV / DL
    use_kan: bool = True  # False: plain Linear layers (ablation 'mlp')
    kan_grid_size: int = 5
    kan_spline_order: int = 3
    pose_layers: int = 4
    pose_hidden: int = 256
    pose_norm: bool = True  # GroupNorm after hidden layers (False: LiftedGAN's plain MLP)
    pose_standardize: bool = True  # feed (w - mean) / (2 std) (False: raw w, LiftedGAN)
    rotation_range: float = 60.0  # degrees
    xy_translation_range: float = 0.1
    z_translation_range: float = 0.01
    # range of DL's diffuse strength (ambient stays in [0, 1]); (0, 1) = Unsup3d / LiftedGAN. A
    # floor keeps a directional light in the model: with diffuse near 0 the shading is flat, the
    # texture explains every pixel and the depth gets no shading signal (see DIGAN-NOTES / README)
    light_diffuse_range: tuple[float, float] = (0.0, 1.0)
    # False: DL's light has no vertical direction (dy = 0; perturbed lights sample dx only).
    # Experimental (True = paper / LiftedGAN): on the synthetic heads M relights vertically by
    # only ~0.12 of the asked dy (0.57 horizontally) while DL reads 0.7, and DL's dy ends
    # anti-correlated with the true light in most runs; shading then bends brow and chin the
    # wrong way. Without it the vertical shading stays in the albedo.
    light_vertical: bool = True
    # DS
    partial_conv: bool = True  # False: plain Conv2d (ablation 'plain_conv')
    depth_norm: Literal["pre", "post"] = "pre"  # GroupNorm before convs (DIGAN) or after them (LiftedGAN)
    depth_nf: int = 16
    depth_z: int = 512
    depth_mlp: int = 4
    use_inject: bool = True  # 1x1 inject conv of the teacher's last feature map
    depth_zero_init: bool = True  # zero-initialised output conv: start from a flat depth map
    # convex shape prior added to DS's raw output (see G3D.depth_prior): breaks the convex/concave
    # ("hollow face") ambiguity that image losses cannot; "none" = LiftedGAN / the paper
    depth_prior: Literal["ellipsoid", "none"] = "ellipsoid"
    depth_prior_apex: float = 0.96  # prior depth at the image centre
    depth_prior_rim: float = 1.05  # prior depth on and outside the ellipse (behind the 1.0 pivot)
    depth_prior_extent: tuple[float, float] = (0.5, 0.75)  # semi-axes x, y as fractions of the half image
    # Gaussian sigma (px at 64 px, scaled with the size) of a low-pass on the prior itself (in
    # tanh units, like model.depth_smooth on the residual); 0 = the sharp ellipsoid (and no prior at
    # all in the paper / LiftedGAN). Why: the square-root cap meets its rim with a vertical
    # tangent, a kink the low-passed residual cannot cancel, so every learnt head kept the
    # prior's steep rim at the top of the head and at the sides, where bench shape finds the
    # shared head losing most to the mean true head (docs/shape-history.md). Experimental.
    depth_prior_smooth: float = 0.0
    # the same low-pass on the prior, applied only when a trained student is used (Student.load;
    # bench shape, train --eval-data, the digan method, sample, export, restore): training keeps
    # model.depth_prior_smooth. Not in DIGAN or LiftedGAN (0). Why: the rim kink above; softening
    # it in a student trained on the sharp prior lowers its one-head MAD by 0.9-1.1 deg on the
    # tuning heads (four students; the bundle's 25.6 -> 24.4, held out 1.2-1.3 deg), while
    # training on the softened prior does not (docs/shape-history.md). Only inference reads it; the
    # tiny preset sets 2.
    inference_prior_smooth: float = 0.0
    # Gaussian sigma (px at 64 px, scaled with the size) of a low-pass on DS's residual before the
    # prior is added (see digan.student.model.raw_to_depth); 0 = paper / LiftedGAN
    depth_smooth: float = 2.0
    # mirror-symmetric canonical depth: DS's residual is averaged with its left-right mirror image
    # (Unsup3d's assumption of a symmetric canonical shape made exact; the prior is symmetric).
    # False = paper / LiftedGAN, where only the flip loss asks for symmetry. Why: a depth fitted per
    # face to the student's losses bends to absorb the image's asymmetries (bench objective-fit);
    # a symmetric one bends less (MAD 27 -> 42 instead of 44 deg) but still bends. Trained with it
    # (tuning heads): MAD 27.3 against the recipe's 26.8 (docs/shape-history.md). Experimental.
    depth_symmetric: bool = False
    # one relief map shared by every face, learnt in training beside DS: a (1,1,S,S) parameter of
    # the depth net, made mirror-symmetric and added to DS's raw output before raw_to_depth (so the
    # mean subtraction, model.depth_smooth and the prior apply to it as to DS's residual). Starts at
    # 0 (the student starts as without it). False = paper / LiftedGAN. Why: the faces share a nose,
    # brow and chin that the per-face residual grows only to ~1/3 of the truth's
    # (docs/shape-history.md). Train it with train.shared_relief_lr_scale (at 1 it hardly moves). Experimental.
    shared_relief: bool = False
    # model.shared_relief's own low-pass: None = the map goes through model.depth_smooth with DS's
    # residual (the bundled student); a number = its own Gaussian sigma in px at 64 px (0 = none),
    # the map then added beside the prior after DS's low-pass. Why try it: the low-pass exists
    # because each face's gradient is mostly high-frequency ripple; a map shared by every face
    # might average that over faces, and at sigma 2 it cannot draw a nose tip. Measured (tuning
    # heads): sigma 1.5 / 1 / 0 give more relief but MAD 22.8 / 25.4 / 28.8 against 21.9 deg and
    # rougher depth, so the ripple is common to the faces (docs/shape-history.md). Experimental.
    shared_relief_smooth: Optional[float] = None
    # inference on an image (a teacher inversion): also invert the image's left-right mirror, mirror
    # that estimate back (depth, albedo and canonical maps flipped; yaw, roll, x translation and the
    # light's dx negated) and average the two. The estimate is then exactly mirror-equivariant, and
    # the inversion's one-sided errors cancel. Not in DIGAN or LiftedGAN, whose inference is one
    # inversion (False). Why: on the tuning heads it lifts DV's yaw correlation 0.95 -> 0.97 and MAD
    # 26.0 -> 25.6 deg (docs/shape-history.md); it costs a second inversion. Only inference reads it.
    flip_average: bool = True
    # inference on an image: the teacher inversion also fits a translation of the teacher's image
    # per photo (Adam learning rate in pixels per step; 0 = none, as DIGAN and LiftedGAN), and the
    # estimate's view moves by inversion_shift_view times it (d px -> d / f scene units). Why: a
    # code cannot tell a face shifted in the crop from a turned face, so without it DV reads the
    # synthetic heads' +-1.4 px jitter as yaw: on the tuning heads DV's yaw error followed the true
    # x shift with correlation -0.66. Fitted, DV's yaw correlation 0.978 -> 0.984 and its slope
    # 1.08 -> 0.98 (96 tuning heads); the fitted shift follows the true one only loosely (corr
    # 0.53 at lr 0.2, 1.2x its spread), so the view takes half of it, the shrunk estimate (the ground-truth
    # head at DV's pose: MAD 15.7 -> 13.9 deg; full: 14.6; none: 14.9). docs/shape-history.md, "A
    # shifted face read as a turn". Only inference reads them; the inverted code banks of
    # training and calibrate-view stay plain inversions (the bundle was calibrated on those).
    inversion_shift_lr: float = 0.15
    inversion_shift_view: float = 0.5
    min_depth: float = 0.9
    max_depth: float = 1.1
    border_depth: float = 1.05
    border_width: int = 2
    # DT
    trans_nf: int = 16
    trans_z: int = 16
    trans_mlp: int = 4
    use_transform_map: bool = True
    trans_blur_radius: Optional[int] = None  # None: 10 px at 256, scaled with the image size
    trans_blur_sigma: Optional[float] = None  # None: 5.66 px at 256 (= LiftedGAN's sigma 4 in its formula)
    # M
    compose_hidden: Optional[int] = None  # None: the teacher's style dimension
    compose_layers: int = 4
    compose_residual: bool = False  # w0 = w + M(...) with zero-initialised last layer
    # texture and gradients
    delight: bool = True  # de-light G(w0) under a frontal light to get the albedo
    grad_filter: Literal["depth", "texture", "both", "none"] = "depth"
    grad_filter_eps: float = 1e-5
    truncation: float = 0.7
    # options of a model registered by another package (e.g. baselines' hologan); filled with
    # that model's defaults by make_config(model=...), so --set model.options.KEY=VALUE works
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """Loss weights (LiftedGAN's defaults) and the loss networks."""

    rec: float = 5.0
    perc: float = 1.0  # inside rec (and inside flip and perturb)
    flip: float = 0.8  # ablation 'no_flip': 0
    identity: float = 1.0  # ablation 'no_identity': 0
    identity_max_yaw: float = 25.0
    perturb: float = 2.0  # render at sampled light/view vs G(M(w, L', V'))
    cycle: float = 4.0  # light/view cycle MSE
    w_reg: float = 0.5
    albedo: float = 0.01  # nuclear norm; ablation 'no_albedo': 0
    # image loss between the canonical face G(w0) and its mirror image: pushes M to frontalise
    # w0 directly (0 = paper / LiftedGAN, where only the flip loss does; see objective docstring)
    canonical_symmetry: float = 0.0
    # cycle loss on the neutral code itself: DL(w0) = (a, b, 0, 0), DV(w0) rotation = 0 (0 = paper
    # / LiftedGAN; experimental, see the objective docstring)
    canonical_cycle: float = 0.0
    # landmark pose anchor (0 = paper / LiftedGAN; the view calibration's default, see
    # digan.student.calibrate): on the codes of inverted real images (train.inverted_data), the
    # MSE between DV's yaw (pose_anchor) and pitch (pose_anchor_pitch), in DV's raw units
    # (degrees / model.rotation_range), and the pose an off-the-shelf face detector's 5
    # keypoints give for the image itself (digan.faces.pose; train.pose_detector). Why: the
    # objective fixes yaw only through the student's own render, whose depth trades turn for
    # relief (DV reads 0.84-0.88x the true yaw on held-out heads, bench shape), and nothing
    # anchors pitch at all; the keypoints measure both on the image, independently of the model
    pose_anchor: float = 0.0
    pose_anchor_pitch: float = 0.0
    # the same anchor on the teacher's own samples (0 = paper / LiftedGAN; experimental): the MSE
    # between DV's (pitch, yaw), both weighted alike, of every sampled code w and of every
    # perturbed code w' (read with w' detached: it trains DV only) and the detector's reading of
    # the teacher's images G(w) and G(w'), read on the fly (train.pose_detector). Why: DV reads
    # sampled codes as its own render fits them, and the cycle loss then teaches M a turn that
    # DV reads, not one the image shows (bench shape, "M turns G(w) / DV by"). Measured at 10:
    # better than the recipe on two training seeds, M turns no further (docs/shape-history.md,
    # "Anchoring during training"); on the shared-relief recipe (twenty-sixth session, one
    # seed, uncalibrated) MAD 21.5 against its control's 22.3 deg, and still no nose
    pose_anchor_samples: float = 0.0
    # landmark parallax (0 = paper / LiftedGAN; experimental): on the codes of inverted real
    # images (train.inverted_data), the detector's 5 keypoints of the real image (nose tip, eyes,
    # mouth corners; train.pose_detector) are carried back through the render at DV's view (held,
    # as is the T map: the term trains the depth alone) to the canonical surface, where a frontal face has its nose
    # tip below the eyes' midpoint (losses.landmark_parallax_loss). Why: how far a turned face's
    # nose tip moves against its eyes is the nose's relief times the sine of the turn, measured
    # on the image, while the teacher's shading and M's turns hold too little of the nose for
    # DIGAN's image terms to find it. Measured (docs/shape-history.md, "Landmark parallax"): in
    # training at 0.3 (with train.inverted_data and the pose anchor) better than without on two
    # seeds and the first side views with a brow and a nose bump, but against the bundle a trade
    # (MAD 0.0-0.4 deg worse on held-out heads); above 0.3 the face bends and MAD rises
    landmark_parallax: float = 0.0
    # the same term once more, its gradient sent to model.shared_relief's map alone (DS's per-face
    # output, the view and the T map held; 0 = off, the paper / LiftedGAN and the bundle; needs
    # model.shared_relief). Why try it: landmark_parallax above 0.3 bends each face to fit one
    # number per face, while the faces share a nose that the shared map can hold for all of them
    # (the bundle's map holds a rim and a brow band, no nose). Measured at 1 and 3 (the bundle's
    # recipe and seed, tuning heads): worse everywhere (MAD 23.5 / 23.3 against 22.0 deg, SIDE
    # +16-17 %) and no nose (bench shape's nose protrusion 0.05x / -0.03x the truth's against
    # 0.11x): the map pushes the eyes and the nose's bridge back and the mouth forward, which
    # satisfies the one number per face as well as a nose would (docs/shape-history.md). Experimental.
    landmark_parallax_shared: float = 0.0
    # DV's sideways shift (0 = paper / LiftedGAN; experimental): ``view_shift`` x the mean over
    # the batch of DV's squared raw x and y translation (raw units: model.xy_translation_range
    # is 1). Why: on the synthetic heads (crops that do not shift with yaw) the bundled DV shifts
    # each face sideways against its yaw (corr -0.96, twice the truth's spread): a flat face's
    # features sweep too little on a turn, and the shift makes up for it in the render. Held
    # near 0, the render can make up for it only with its depth and texture (docs/shape-history.md,
    # "Holding the shift in training").
    # Not for crops that shift with the head's turn (FFHQ: see perturb_translation)
    view_shift: float = 0.0
    albedo_pool: int = 4
    albedo_filter: Literal["laplacian", "blur_residual"] = "laplacian"
    perturb_pitch: float = 15.0  # sampled |pitch| range (deg)
    perturb_yaw: float = 45.0  # sampled |yaw| range (deg)
    # x translation of a perturbed view, raw units per sin(yaw): LiftedGAN's heuristic for FFHQ
    # crops (aligned on the face, so a turned head shifts in the frame); 0 for data whose crops
    # do not shift with yaw (the synthetic heads)
    perturb_translation: float = 0.2
    # light of a perturbed view: "permute" = ambient/diffuse and direction taken from two random
    # permutations of the batch's predicted lights (LiftedGAN); "direction" = the same
    # ambient/diffuse, direction (dx, dy) ~ U(-perturb_light_range, +perturb_light_range) each.
    # Why: permuting can only explore lights DL already predicts, so once DL settles on one
    # frontal light (measured on the tiny preset: every face lit from (0.05, -0.14) while the
    # synthetic heads' lights span +-0.8) the perturbed views never relight the face, M never
    # learns to remove the light from w0, the albedo keeps the shading and the depth gets no
    # shading signal. Sampled directions make M relight (cycle loss: DL(w') = L') as views do.
    perturb_light: Literal["permute", "direction"] = "permute"
    perturb_light_range: float = 0.8
    # which terms send gradient to the depth: "all" (paper / LiftedGAN) or "none" for rec and
    # flip (the single-view terms then train albedo, light, view and M only; depth learns from
    # the perturbed views). Experimental switch for the shape study (docs/shape-history.md).
    rec_depth_grad: Literal["all", "none"] = "all"
    # the same for the flip term alone ("none": the mirrored render trains albedo, light, view and
    # M but not the depth; rec and the perturbation still do). Why: a depth fitted per face to
    # the bundled student's own objective, its nets held (bench objective-fit), runs from MAD 27
    # to 44 deg in 100 steps, to 36 without flip. Trained with "none" (tuning heads): MAD 27.0
    # against the recipe's 26.8, nose-scale detail lower (docs/shape-history.md). Experimental.
    flip_depth_grad: Literal["all", "none"] = "all"
    # the same for the perturbation render (at DV/DL(w') vs G(w')): "none" = it trains DV, DL
    # and M but not the depth. Why: M turns G(w') by about half the asked yaw while DV reads
    # more, so this render is turned further than its target and pulls every depth flatter
    # (bench shape's "M turns" line; docs/shape-history.md). Experimental switch for the shape study.
    perturb_depth_grad: Literal["all", "none"] = "all"
    # what the cycle loss MSE(DL(w'), L') + MSE(DV(w'), V') trains: "all" = DV, DL and M
    # (LiftedGAN); "compose" = M only, DV and DL read w' with their weights held. Why: M turns
    # a face less than asked (bench shape, "M turns G(w) / DV by": 0.49 of the asked yaw on the
    # previous bundle) and a cycle that also trains DV teaches DV to read more turn than the
    # teacher's image G(w') shows (0.62); the perturbation loss then renders the face turned
    # further than its target and every shape scored on it prefers ~0.75x its relief. With
    # "compose", DV and DL learn to read images only from renders (rec, perturb), and M must
    # really turn and relight the face for them to read V' and L'.
    cycle_grad: Literal["all", "compose"] = "all"
    # weight of the image cycle (0 = paper / LiftedGAN; experimental): an image reader R (a
    # small CNN, networks.ImageReader) learns to read from the teacher's images G(w) the rotation
    # and light DV and DL read from the codes w, and, with R's weights held, MSE(R(G(w')), (V',
    # L')) trains M through the teacher. Why: DV and DL read w', not the image, so M can satisfy
    # the cycle loss with codes DV reads as turned while G(w') turns by half as much (bench
    # shape, "M turns G(w) / DV by"); R makes M answer for what the image shows
    cycle_image: float = 0.0
    # the view and light of the perturbation render that is compared with G(w') (the term that
    # teaches the depth from a second view): "code" = DV/DL's reading of the code w' (paper /
    # LiftedGAN); "image" = what the image reader R (networks.ImageReader, fitted to DV/DL's
    # readings of the teacher's unperturbed images) reads from G(w') itself, held and detached
    # (translation stays DV's). Why: M turns G(w') by about half the asked yaw while DV reads
    # w' as turned by V' (bench shape, "M turns G(w) / DV by"), so with "code" the render is
    # turned further than its target and every shape scored on it prefers ~0.5-0.75x its
    # relief; reading the image pairs G(w') with the view it shows, however far M turned it.
    # Experimental (docs/shape-history.md). "detector": pitch and yaw are DV's reading of the
    # unperturbed code w plus the turn the face detector (train.pose_detector) reads between
    # G(w) and G(w'), held; roll, translation and light stay DV/DL's of w'. Why: R learns DV's
    # readings and so inherits their bias; the detector is independent of the model, and the
    # difference of two readings of one face cancels its per-face offset. Measured worse on two
    # training seeds (MAD +0.9-1.3 deg; docs/shape-history.md, "Twenty-seventh session").
    perturb_view: Literal["code", "image", "detector"] = "code"
    perceptual: Literal["auto", "vgg16", "laplacian_pyramid", "none"] = "auto"
    perceptual_path: Optional[str] = None
    perceptual_scales: int = 3
    recognizer: str = "auto"  # auto | none | torch:PATH | onnx:PATH | teacher_features
    recognizer_crop: tuple[float, float, float, float] = (0.125, 0.15, 0.875, 0.9)  # x0, y0, x1, y1 fractions


@dataclass
class TrainConfig:
    steps: int = 30_000
    batch: int = 8  # per process
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    seed: int = 0
    ckpt_every: int = 1000
    grid_every: int = 1000
    log_every: int = 10
    w_stats_samples: int = 10_000  # samples for w mean/std (LiftedGAN: 50,000)
    device: Optional[str] = None  # None: cuda when available
    init_from: Optional[str] = None  # start from another student checkpoint's weights (fine-tuning)
    # the sub-networks of G3D that learn (names of its modules: view_net, light_net, depth_net,
    # trans_net, compose, ...); the rest are held at their initial (train.init_from) weights.
    # None = all (paper / LiftedGAN). Used by the view calibration (digan.student.calibrate).
    trainable: Optional[list[str]] = None
    # steps at the start during which DS (the depth net) is not updated: the depth stays at its
    # initialisation (the convex model.depth_prior) while DV, DL, M and DT learn to rotate and
    # light a convex head; 0 = paper / LiftedGAN (see digan.student.train.train)
    depth_warmup: int = 0
    # learning rate of DS (the depth net) as a multiple of train.lr (1 = paper / LiftedGAN).
    # Experimental: on the tuning heads the inner face is at its best 150-400 steps after the
    # depth starts learning and then drifts (docs/shape-history.md); a slower depth net tests whether
    # the drift is a step-size effect
    depth_lr_scale: float = 1.0
    # learning rate of model.shared_relief's map as a multiple of train.lr (times
    # train.depth_lr_scale, as it is part of DS); without the switch it has no effect. The map
    # gets one gradient per step from the whole batch, so at 1 it moves ~1/100 of its useful size
    # in a tiny run (docs/shape-history.md). Experimental.
    shared_relief_lr_scale: float = 1.0
    # learning-rate schedule: "none" = constant (paper / LiftedGAN); "linear" = every learning
    # rate falls linearly from its value at the step the depth starts learning
    # (train.depth_warmup; 0 = the first step) to 1/(steps - depth_warmup) of it at the last
    # step (train.lr_factor). Experimental: the shape on the tuning heads swings by +-1.5 deg
    # between evaluations 125 steps apart, so the last step's student is a noisy pick
    lr_decay: Literal["none", "linear"] = "none"
    # weight averaging: with ema > 0 the student that is written (student.pt, best.pt) and
    # evaluated during training (train.eval_data) is an exponential moving average of the
    # weights, ``avg = ema * avg + (1 - ema) * weights`` after every update from step ema_start
    # on (None = train.depth_warmup; up to it the average is the weights themselves). Training
    # itself is unchanged. 0 = off (paper / LiftedGAN: the last step's weights).
    # Experimental: the last step's depth is a noisy pick (see lr_decay)
    ema: float = 0.0
    ema_start: Optional[int] = None
    # Gaussian noise added to every sampled style code, in units of w's per-dimension std (after
    # the truncation, before the teacher draws its image; 0 = paper / LiftedGAN). Why: the codes
    # a teacher inversion finds for a real head lie off the truncated codes the student trains on
    # (bench shape, "DV input spread": 1.47x), and there DV reads 0.67x the yaw its own render
    # fits ("render-fit yaw"); noisy codes make the student read such codes from their images.
    # Experimental (docs/shape-history.md).
    code_noise: float = 0.0
    # codes of real images: the first inverted_n images of this folder (e.g. the teacher's own
    # training images; never the heads you evaluate on) are inverted into the teacher once
    # (inverted_steps steps, as bench shape inverts; cached in OUT/inverted_codes.pt), and in
    # every batch a fraction inverted_fraction of the sampled codes is replaced by codes drawn
    # from that bank (the target stays the teacher's image of the code). None = off (paper /
    # LiftedGAN: sampled codes only). Why: a user reconstructs a photo through such an
    # inversion, and there DV reads 0.67x the yaw its own render fits (bench shape,
    # "render-fit yaw"), while on sampled codes it reads what its render fits. Experimental.
    inverted_data: Optional[str] = None
    inverted_n: int = 512
    inverted_steps: int = 60
    inverted_fraction: float = 0.5
    # also invert each of those images' left-right mirror (the bank, and the detector's readings,
    # then hold 2 x inverted_n heads: the images, then their mirrors). Why: a reconstruction
    # averages an image's estimate with its mirror's (model.flip_average), so DV reads the codes
    # of mirrored heads as often as those of the heads; the mirrors double the heads DV is
    # calibrated on at no cost in images. Not in DIGAN or LiftedGAN (docs/shape-history.md).
    inverted_mirror: bool = False
    # > 0: each inversion of the bank also fits a translation of the teacher's image per head
    # (digan.student.method.invert_teacher's shift_lr, pixels per step), as a reconstruction
    # inverts a photo (model.inversion_shift_lr); 0 = the plain inversion (paper / LiftedGAN,
    # and every bank made before the option). The bank keeps the codes (their teacher images are
    # the targets), not the shifts. Experimental: a view calibration on such a bank scored as the
    # bundle's on the tuning heads (docs/shape-history.md, twenty-second session)
    inverted_shift_lr: float = 0.0
    # the SCRFD face detector (.onnx) whose keypoints give loss.pose_anchor's targets; None = the
    # default detector (digan.faces.onnx_models.resolve_model)
    pose_detector: Optional[str] = None
    threads: Optional[int] = None  # CPU threads (torch.set_num_threads); 1 is much faster on a busy machine
    find_unused_parameters: bool = False  # DDP
    # 3D accuracy on held-out heads during training (rank 0), logged to OUT/shape_eval.jsonl|csv
    # and plotted by `digan-bench report --runs OUT` (digan.student.diagnostics.TrainingShapeEval)
    eval_data: Optional[str] = None  # a `digan-bench data synth` set at the teacher's size; None = off
    eval_every: Optional[int] = None  # steps between evaluations; None = ckpt_every
    eval_faces: int = 16  # first N heads of eval_data
    eval_inversion_steps: int = 30  # teacher inversion steps (bench shape: 60): cheap, for the trend
    # validation-based model selection: with eval_data, also keep OUT/best.pt, the student at the
    # evaluation with the lowest value of this shape_eval column ("mad", "side" or "face_mad"),
    # counting only evaluations after the depth warm-up (a depth still equal to its prior is
    # not a learnt shape); None = off. Use tuning heads here, never the heads you report on.
    keep_best: Optional[Literal["mad", "side", "face_mad"]] = None


@dataclass
class StudentRendererConfig:
    """The renderer settings the student uses (image size comes from the teacher)."""

    fov: float = 10.0
    backend: Literal["auto", "torch", "pytorch3d"] = "auto"
    texture: Literal["vertex", "grid"] = "vertex"
    # normals from depth (shading, de-lighting): "unit" = exact unit normals (DIGAN's default);
    # "liftedgan" = LiftedGAN's n / (|n| + 1e-7), 0.3 % short at 64 px, 5 % at 256 px (the liftgan
    # baseline, so official checkpoints compute what LiftedGAN computes); digan.render.shading
    normal_norm: Literal["unit", "liftedgan"] = "unit"


@dataclass
class StudentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    renderer: StudentRendererConfig = field(default_factory=StudentRendererConfig)
    variant: str = "full"
    preset: str = "paper"


#: ablation variants: name -> overrides (the paper's ablations plus the two architecture switches)
VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no_flip": ["loss.flip=0"],
    "no_identity": ["loss.identity=0"],
    "no_albedo": ["loss.albedo=0"],
    "mlp": ["model.use_kan=false"],
    "plain_conv": ["model.partial_conv=false"],
    # M as w0 = w + M(...), its last layer zero at the start (M starts as the identity): the tiny
    # preset's DIGAN already has it; LiftedGAN's M is not residual, and at the tiny budget the
    # LiftGAN student's M sent every code to one face (docs/shape-history.md, "The LiftGAN student's one face")
    "residual_compose": ["model.compose_residual=true"],
}

#: presets: name -> overrides
PRESETS: dict[str, list[str]] = {
    "paper": [],
    # narrow 64 px student for the bundled synthetic teacher, ~10 minutes on one CPU core. Beyond
    # the narrow networks, a schedule that makes pose and shape appear within 1,200 steps instead
    # of LiftedGAN's 50,000 (each switch measured with `digan-bench bench shape`, see
    # digan/assets/tiny_student_64.json): the depth net is held at the convex head prior for the
    # first 900 steps (train.depth_warmup) while M, DV and DL learn to rotate and light a convex
    # head (with 600, measured on the tuning heads, the inner face was best 150-400 steps after
    # the depth started learning and then drifted while the pose kept improving; starting the
    # depth at 900, on a better pose, gave MAD 28.8 / 30.0 deg at step 1,200 on two seeds against
    # 30.9 / 32.1, and the inner face beat the posed prior in both); a stronger flip loss (3.0
    # instead of 0.8) and the canonical-symmetry loss make G(w0) frontal; perturbed views stay
    # within the teacher's poses (|yaw| <= 30: the synthetic heads span +-35) and carry no
    # yaw-tied translation (the synthetic crops do not shift with yaw).
    # DL's diffuse strength is kept in [0.3, 1]: without the floor, two runs collapsed it to
    # 0.05-0.07 within 250 steps (flat shading, so the depth got no shading signal and ended
    # worse than a flat plane: MAD 50 deg on held-out heads); with it, 0.47 and MAD 36 deg.
    # Perturbed views sample their light direction (loss.perturb_light=direction) instead of
    # permuting DL's: with permutation DL lit every face from one near-frontal direction and the
    # learnt depth drifted away from the truth once it trained (tuning heads, step 600 -> 1,200:
    # MAD 32 -> 36 deg); with sampled directions it keeps improving (31.5 -> 30.4 at step 1,000).
    "tiny": [
        "preset=tiny",
        "model.pose_hidden=64",
        "model.pose_layers=3",
        "model.depth_nf=8",
        "model.depth_z=64",
        "model.depth_mlp=2",
        "model.trans_nf=4",
        "model.trans_z=16",
        "model.trans_mlp=2",
        "model.compose_hidden=64",
        "model.compose_residual=true",
        "train.batch=8",
        "train.lr=3e-4",
        "train.steps=1200",
        "train.depth_warmup=900",
        "model.inference_prior_smooth=2.0",
        "train.ckpt_every=250",
        "train.grid_every=250",
        "train.w_stats_samples=4096",
        "loss.flip=3.0",
        "loss.canonical_symmetry=1.0",
        "loss.perturb_yaw=30",
        "loss.perturb_translation=0",
        "loss.perceptual_scales=2",
        "model.light_diffuse_range=[0.3,1.0]",
        "loss.perturb_light=direction",
    ],
}


def variant_overrides(variant: str) -> list[str]:
    if variant not in VARIANTS:
        raise DiganError(f"unknown DIGAN variant '{variant}'; choose from: {', '.join(VARIANTS)}")
    return list(VARIANTS[variant])


def make_config(preset: str = "paper", variant: str = "full", overrides: list[str] | None = None, base: StudentConfig | None = None,
                model: str | None = None) -> StudentConfig:
    """Config = base (defaults) <- model defaults <- preset <- model's preset overrides <- variant <- overrides.

    ``model`` (a name of :mod:`digan.student.registry`, e.g. ``liftgan``) sets ``model.name`` and
    applies the defaults that model registered (its settings, its ``model.options``); None keeps
    the base config's model.
    """
    if preset not in PRESETS:
        raise DiganError(f"unknown preset '{preset}'; choose from: {', '.join(PRESETS)}")
    cfg = base or StudentConfig()
    model_preset: list[str] = []
    if model is not None:
        from digan.student.registry import model_defaults

        defaults, options, presets = model_defaults(model)
        cfg = apply_overrides(cfg, [f"model.name={model}"] + defaults)
        if options is not None:
            import dataclasses

            cfg.model.options = {**dataclasses.asdict(options), **cfg.model.options}
        model_preset = list(presets.get(preset, []))
    cfg = apply_overrides(cfg, PRESETS[preset] + [f"preset={preset}"] + model_preset)
    cfg = apply_overrides(cfg, variant_overrides(variant) + [f"variant={variant}"])
    return apply_overrides(cfg, overrides)
