#!/usr/bin/env bash
# Re-create the bundled tiny students and the equal-budget comparison in README:
#   digan/assets/tiny_student_64.pt  (DIGAN, tiny preset)
#   digan/assets/tiny_liftgan_64.pt  (LiftGAN, tiny preset: same teacher, steps, batch, lr)
# and the two architecture ablations (mlp: KAN -> MLP; plain_conv: partial -> plain conv), kept in
# runs/ (not bundled). Each run logs SIDE/MAD/roughness on held-out heads during training
# (--eval-data, a seed no evaluation uses). Runs resume when the script is rerun; two trainings
# run side by side on a 2-core machine, one thread each (~20-30 minutes per pair).
#
#   ./scripts/train_bundled.sh            # train all four, then package DIGAN and LiftGAN
#   STEPS=2400 ./scripts/train_bundled.sh # another budget (the same for every model)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/digan-bench}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/bundled}
TUNE=${TUNE:-data/tune64}  # seed 5: tuning/monitoring only; README numbers use seeds 123 and 1
STEPS_ARG=${STEPS:+--steps $STEPS}

[ -d "$TUNE" ] || $BIN data synth --out "$TUNE" --n 200 --size 64 --seed 5

train() {  # name, extra args...
    local name=$1; shift
    $BIN train --teacher tiny --preset tiny --threads 1 --out "$RUNS/$name" --eval-data "$TUNE" $STEPS_ARG "$@" \
        > "$RUNS/$name.log" 2>&1
}
mkdir -p "$RUNS"
train digan & train liftgan --model liftgan & wait
train mlp --variant mlp & train plain_conv --variant plain_conv & wait

$PY - "$RUNS" "$TUNE" "$STEPS_ARG" <<'EOF'
import sys
from digan.student.train import package_student
runs, tune, steps = sys.argv[1], sys.argv[2], sys.argv[3]
base = " ".join(["digan-bench train --teacher tiny --preset tiny --threads 1 --eval-data", tune] + ([steps] if steps else []))
for name, dest, cmd in (
    ("digan", "digan/assets/tiny_student_64.pt", base),
    ("liftgan", "digan/assets/tiny_liftgan_64.pt", base + " --model liftgan"),
):
    pt, js = package_student(f"{runs}/{name}", dest, command=cmd)
    print("packaged", pt, js)
EOF
