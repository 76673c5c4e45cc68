#!/usr/bin/env bash
# APSCL's superpixel size on CHAOST2, chosen per test fold on the inner validation split of setting 1
# (issue 16): the preset's superpixels, or superpixels of at least 800 voxels (data.superpixels.min_size
# 800: the size that helped ALPNet, README "Training"; here every fold's choice is made on its validation
# fold only).
# The steps and where they write: scripts/inner_choice.sh (SETTINGS="1 2" by default). With PER_GROUP=1 the
# same inner split chooses per fold and setting-2 test group, on the group's classes, and setting 2 is scored
# with those ten models, into results/apscl_cpu-sp-min800-choice-per-group.
#
#   [PER_GROUP=1] bash scripts/apscl_superpixel_size.sh
set -euo pipefail
exec bash "$(dirname "$0")/inner_choice.sh" apscl sp-min800 --set 'data.superpixels={min_size: 800}'
