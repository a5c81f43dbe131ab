#!/usr/bin/env bash
# Re-create the bundled tiny students and the equal-budget comparison in README ("DIGAN, LiftGAN and
# the ablations at equal teacher and budget"):
#   digan/assets/tiny_student_64_base.pt  (DIGAN, tiny preset)
#   digan/assets/tiny_student_64.pt       (the same, DV calibrated: digan-bench calibrate-view)
#   digan/assets/tiny_liftgan_64.pt       (LiftGAN, tiny preset: same teacher, steps, batch, lr;
#                                          DV calibrated the same way)
# and the two architecture ablations (mlp: KAN -> MLP; plain_conv: partial -> plain conv), kept in
# runs/ (not bundled; calibrated too). Each run logs SIDE/MAD/roughness on held-out heads during
# training (--eval-data, a seed no evaluation uses). Every model trains on the same recipe
# (sixteenth session; docs/shape-history.md, "Landmark parallax"): half of each batch codes of 512 of the
# teacher's own training heads (DATA, seed 0; made here when missing) inverted into the teacher,
# DV's yaw and pitch on them anchored to the pose the face detector (DETECTOR, the demo's
# SCRFD-500M) reads from their 5 keypoints, and the depth asked to put the nose tip between the
# eyes on the canonical surface (loss.landmark_parallax=0.3); since the nineteenth session DV's
# sideways shift is held near 0 (loss.view_shift=10; docs/shape-history.md, "Holding the shift in training").
# Since the twentieth session LiftGAN's compose net is residual in the tiny preset, as DIGAN's
# (baselines.liftgan.LIFTGAN_TINY; docs/shape-history.md, "The LiftGAN student's one face").
# Since the twenty-fourth session DIGAN and its two ablations also learn one mirror-symmetric
# relief map shared by every face (model.shared_relief=true, at 10x the depth net's rate;
# docs/shape-history.md, "Twenty-third session: the shared relief over training seeds"); since the
# twenty-eighth session from training seed 0 (DIGAN_RECIPE; seed 1 drew almost no nose:
# "Twenty-eighth session: the seed-0 bundle"); LiftGAN keeps the recipe without them (its bundled
# weights, seed 0, are unchanged).
# The view calibration (its defaults: 1,200 steps; all 2,000 of those heads and their mirror
# images, since the seventeenth session) inverts them with the same anchor. Runs resume when the
# script is rerun; two trainings run side by side on a 2-core machine, one thread each (~20-30
# minutes per pair; the first calibration inverts the 4,000 images, ~18 minutes on one core).
#
# On a fresh clone (its own data sets and caches) the DIGAN student differs from the bundled one
# (twenty-fifth session: tuning MAD 23.4 against 22.0 deg, within the training-seed spread); the
# bundle reproduces bit for bit only from the original runs' caches (docs/shape-history.md).
# Its nose does not come back either: two fresh-clone reruns of DIGAN (twenty-eighth session, one
# and two threads) met every numeric target but drew 0.01x / 0.05x of the truth's nose, below the
# prior's 0.13x (the bundle 0.15x): "Twenty-eighth session: the bundle's nose does not come back
# on a fresh clone" in docs/shape-history.md.
#
#   ./scripts/train_bundled.sh            # train all four, then package DIGAN and LiftGAN
#   STEPS=2400 ./scripts/train_bundled.sh # another budget (the same for every model)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/digan-bench}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/bundled}
TUNE=${TUNE:-data/tune64}  # seed 5: tuning/monitoring only; README numbers use seeds 123 and 77
DATA=${DATA:-data/synth64}  # the teacher's training heads (seed 0): the view calibration's images
DETECTOR=${DETECTOR:-../shared/data/face-models/det_500m.onnx}  # the pose anchor's keypoints
STEPS_ARG=${STEPS:+--steps $STEPS}
# the training recipe every model shares (the tiny preset plus these)
RECIPE="--set train.inverted_data=$DATA --set train.pose_detector=$DETECTOR --set loss.pose_anchor=10 \
--set loss.pose_anchor_pitch=10 --set loss.landmark_parallax=0.3 --set loss.view_shift=10"
# DIGAN's own additions (DIGAN, mlp, plain_conv; not LiftGAN)
DIGAN_RECIPE="--set model.shared_relief=true --set train.shared_relief_lr_scale=10 --set train.seed=0"
CAL_STEPS=1200

[ -d "$TUNE" ] || $BIN data synth --out "$TUNE" --n 200 --size 64 --seed 5
[ -d "$DATA" ] || $BIN data synth --out "$DATA" --n 2000 --size 64 --seed 0

train() {  # name, extra args...
    local name=$1; shift
    $BIN train --teacher tiny --preset tiny --threads 1 --out "$RUNS/$name" --eval-data "$TUNE" $STEPS_ARG $RECIPE "$@" \
        > "$RUNS/$name.log" 2>&1
}
mkdir -p "$RUNS"
train digan $DIGAN_RECIPE & train liftgan --model liftgan & wait
train mlp --variant mlp $DIGAN_RECIPE & train plain_conv --variant plain_conv $DIGAN_RECIPE & wait

calibrate() {  # name: DV of RUNS/name adapted to inverted training heads -> RUNS/name_cal
    # the heads' codes and poses depend on the teacher and the detector, not on the student:
    # reuse the first calibration's (each cache checks its own key and is remade if it differs)
    mkdir -p "$RUNS/$1_cal"
    for f in inverted_codes.pt pose_anchors.pt; do
        [ -f "$RUNS/$1_cal/$f" ] || [ ! -f "$RUNS/digan_cal/$f" ] || cp "$RUNS/digan_cal/$f" "$RUNS/$1_cal/$f"
    done
    $BIN calibrate-view --student "$RUNS/$1/student.pt" --images "$DATA" --out "$RUNS/$1_cal" --threads 1 \
        --steps $CAL_STEPS --mirror-heads --eval-data "$TUNE" --detector "$DETECTOR" > "$RUNS/$1_cal.log" 2>&1
}
calibrate digan  # inverts the heads (~18 minutes on one core); the others reuse its codes
calibrate liftgan & calibrate mlp & wait
calibrate plain_conv

$PY - "$RUNS" "$TUNE" "$STEPS_ARG" "$DETECTOR" "$RECIPE" "$CAL_STEPS" "$DIGAN_RECIPE" <<'EOF'
import sys
from digan.student.train import package_student
runs, tune, steps, detector, recipe, cal_steps, digan_recipe = sys.argv[1:8]
base = " ".join(["digan-bench train --teacher tiny --preset tiny --threads 1 --eval-data", tune] + ([steps] if steps else []) + [recipe])
cal = f"digan-bench calibrate-view --images data/synth64 --threads 1 --steps {cal_steps} --mirror-heads --eval-data {tune} --detector {detector} --student "
for name, dest, cmd in (
    ("digan", "digan/assets/tiny_student_64_base.pt", base + " " + digan_recipe),
    ("digan_cal", "digan/assets/tiny_student_64.pt", cal + "digan/assets/tiny_student_64_base.pt"),
    ("liftgan_cal", "digan/assets/tiny_liftgan_64.pt", cal + f"{runs}/liftgan/student.pt (" + base + " --model liftgan)"),
):
    pt, js = package_student(f"{runs}/{name}", dest, command=cmd)
    print("packaged", pt, js)
EOF
