#!/usr/bin/env bash
# ADNet's supervoxel sizes on CHAOST2, chosen per test fold on the inner validation split of setting 1
# (issue 16): one size (the preset's 5000 voxels) or two mixed (5000 and 20000 voxels, segments 200
# and 50: data.pseudolabel_scales=[1, 4]), then scored on the test folds of settings 1 and 2 with the
# same choice per fold (the sizes are a property of the supervoxels, not of the slices a setting drops).
# The steps and where they write: scripts/inner_choice.sh (the chosen models' scores under the name
# they were first committed with, results/adnet_cpu-inner-choice). With CHOICE_SETTING=2 the choice is
# made on setting 2's own inner split (ten models per candidate) and scored in setting 2 only, into
# results/adnet_cpu-scales-1-4-setting2-choice; with PER_GROUP=1 too, per fold and test group (each group
# has its own model in setting 2), into results/adnet_cpu-scales-1-4-setting2-choice-per-group.
#
#   [CHOICE_SETTING=2 [PER_GROUP=1]] bash scripts/adnet_supervoxel_scales.sh
set -euo pipefail
[ "${CHOICE_SETTING:-1}" = 1 ] && export NAME=${NAME:-adnet_cpu-inner-choice}
exec bash "$(dirname "$0")/inner_choice.sh" adnet scales-1-4 --set 'data.pseudolabel_scales=[1, 4]'
