#!/usr/bin/env bash
# Registration-guided few-shot segmentation (issue 15), one model at a CPU recipe on one data set:
#
#   [TAG=name] [FUSION=learned|average] [SELECTION=selection.json] [SELECTION_SUPPORTS=0,1] \
#     bash scripts/guided_tables.sh MODEL DATASET FOLDS SUPPORTS [--set KEY=VALUE ...]
#   e.g. bash scripts/guided_tables.sh alpnet CHAOST2 0,1,2,3,4 0,1,2,3
#
# TAG and the --set overrides name and define a recipe other than the CPU preset, exactly as for
# scripts/cpu_tables.sh (the same runs are reused), e.g. the default model's longer recipe:
#   TAG=sp-min800-lr2e-2-4800 bash scripts/guided_tables.sh alpnet CHAOST2 0,1,2,3,4 0,1 \
#     --set 'data.superpixels={min_size: 800}' --set optim.lr=0.02 --set optim.iterations=4800 --set optim.lr_step=48
# SELECTION_SUPPORTS narrows the supports the fusion is chosen on (default: SUPPORTS), to save time.
# FUSION (default learned) is select-guidance's --fusion: the learned fusion fitted per test fold on the other
# folds, or the average fusion chosen per test fold on the other folds; results go to NAME-learned (learned)
# or NAME (average), NAME below. PER_CLASS=1 (learned only) adds --per-class: each class also gets its own fit,
# kept where a cross-validation over the other folds prefers it; THRESHOLDS=0.2,...,0.7 adds --class-thresholds:
# each class takes the threshold of these best for its Dice on the other folds; results go to
# NAME-learned-per-class, NAME-learned-thresholds or NAME-learned-per-class-thresholds.
# SHOTS=k (default 1) scores k-shot (each support index with the next k - 1 volumes, registrations fused by
# majority voting), into DATASET-setting1-kshot folders; with SELECTION=the 1-shot selection.json of the same
# data set, each fold keeps the fusion fitted at 1 shot on the other folds, e.g.
#   SHOTS=2 SELECTION=results/guided/alpnet_cpu-learned/CHAOST2-setting1/selection.json \
#     bash scripts/guided_tables.sh alpnet CHAOST2 0,1,2,3,4 0,1,2
# REGISTRATION_ITERATIONS=40,20,10 registers with that SyN schedule (default ANTsPy's 40,20,0), for the
# guidance and registration alone, e.g. the schedule scripts/registration_settings.sh chose on training folds;
# results go to NAME...-syn-40-20-10 and registration-syn-40-20-10.
# LABEL_FUSION=jlf fuses the warped labels by joint label fusion (default vote), for registration alone and as the
# guidance's prior; results go to NAME...-jlf and registration-syn...-jlf.
# EXTENTS=gt (default: estimated gt) scores only those protocols, so that two runs can score them side by side (the
# second with SELECTION=the first's selection.json).
# RESULTS=folder puts every result of the run under that folder instead of results/guided (e.g. a rerun beside
# the committed tables, none of them reused).
#
# 1. one model per fold (scripts/cpu_tables.sh, reused when trained) and the registration of every
#    support onto every query (cached in runs/registration-cache, as scripts/registration_tables.sh);
# 2. without SELECTION: `medfss select-guidance` fits (learned) or chooses (average) each test fold's fusion
#    on the tool's output (no query label) of the other folds only (nested cross-validation),
#    writing results/guided/NAME[-learned]/DATASET-setting1/selection.json (NAME below);
#    with SELECTION (a selection.json made on another data set, or on this one at 1 shot): nothing is chosen;
# 3. `medfss evaluate --guidance registration --guidance-selection` scores every fold with its choice
#    (SELECTION of another data set: every fold with its best-overall choice) under both protocols, beside the
#    same models without guidance (the position rule) and registration alone (these two reused when already
#    scored: delete them to score again, e.g. on other supports), on the same folds and supports, into
#    results/guided/{NAME[-learned...],NAME-position,registration-syn}/DATASET-setting1[-kshot][-extent-estimated]/,
#    NAME being MODEL_cpu[-TAG].
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 dataset=$2 folds=$3 supports=$4
shift 4
selection=${SELECTION:-}
fusion=${FUSION:-learned}
fit_options=() fitted="per fold"
[ -n "${PER_CLASS:-}" ] && fit_options+=(--per-class) fitted="per fold and class"
[ -n "${THRESHOLDS:-}" ] && fit_options+=(--class-thresholds "$THRESHOLDS") fitted="$fitted, class thresholds chosen"
name=${model}_cpu${TAG:+-$TAG}
recipe="CPU preset${TAG:+, $TAG: $*}"
runs=runs/$name/${dataset}-setting1
root=${RESULTS:-results/guided}
out=$root/$name$([ "$fusion" = learned ] && echo -learned)${PER_CLASS:+-per-class}${THRESHOLDS:+-thresholds}
shots=${SHOTS:-1}
folder=${dataset}-setting1$([ "$shots" = 1 ] || echo "-${shots}shot")
schedule=() syn=syn
if [ -n "${REGISTRATION_ITERATIONS:-}" ]; then
  schedule=(--registration-iterations "$REGISTRATION_ITERATIONS") syn=syn-${REGISTRATION_ITERATIONS//,/-} out=$out-$syn
fi
if [ "${LABEL_FUSION:-vote}" != vote ]; then
  schedule+=(--registration-label-fusion "$LABEL_FUSION") syn=$syn-$LABEL_FUSION out=$out-$LABEL_FUSION
fi
out=$out/$folder
checkpoint="$runs/fold{fold}/model.pt"
SUPPORTS=$supports TRAIN_ONLY=1 bash scripts/cpu_tables.sh "$model" "$dataset" 1 "$folds" "$@"
cache=(--registration-cache runs/registration-cache "${schedule[@]}")
protocol=(--dataset "$dataset" --folds "$folds" --support-index "$supports" --shots "$shots" --quiet)
if [ -z "$selection" ]; then
  selection=$out/selection.json
  .venv/bin/medfss select-guidance --model "$model" --checkpoint "$checkpoint" --dataset "$dataset" \
    --folds "$folds" --support-index "${SELECTION_SUPPORTS:-$supports}" --shots "$shots" --fusion "$fusion" \
    "${fit_options[@]}" --quiet "${cache[@]}" --out "$out"
  how=$([ "$fusion" = learned ] && echo "fitted $fitted" || echo "chosen per fold")
  label="$model ($recipe) + registration guidance, $fusion fusion $how on the other folds"
else
  label="$model ($recipe) + registration guidance, fusion of $selection"
fi
[ -z "${REGISTRATION_ITERATIONS:-}" ] || label="$label, SyN ${REGISTRATION_ITERATIONS}"
[ "${LABEL_FUSION:-vote}" = vote ] || label="$label, labels fused by $LABEL_FUSION"
for extent in ${EXTENTS:-estimated gt}; do
  suffix=$([ "$extent" = gt ] && echo "" || echo "-extent-estimated")
  .venv/bin/medfss evaluate --model "$model" --checkpoint "$checkpoint" "${protocol[@]}" --extent "$extent" \
    --guidance registration --guidance-selection "$selection" "${cache[@]}" --label "$label" \
    --out "$out$suffix"
  position=$root/$name-position/$folder$suffix
  [ -f "$position/results.json" ] || .venv/bin/medfss evaluate --model "$model" --checkpoint "$checkpoint" \
    "${protocol[@]}" --extent "$extent" --label "$model ($recipe), same models without guidance" --out "$position"
  registration=$root/registration-$syn/$folder$suffix
  [ -f "$registration/results.json" ] || .venv/bin/medfss evaluate --model registration "${cache[@]}" \
    "${protocol[@]}" --extent "$extent" --label "registration ($syn)" --out "$registration"
done
.venv/bin/medfss report results --out results/README.md
