#!/usr/bin/env bash
# APSCL's superpixel size on CHAOST2, chosen per test fold on the inner validation split of setting 1
# (issue 16): the preset's superpixels, or superpixels of at least 800 voxels (data.superpixels.min_size
# 800: the size that helped ALPNet, README "Training"; here every fold's choice is made on its validation
# fold only).
# The steps and where they write: scripts/inner_choice.sh (SETTINGS="1 2" by default).
#
#   bash scripts/apscl_superpixel_size.sh
set -euo pipefail
exec bash "$(dirname "$0")/inner_choice.sh" apscl sp-min800 --set 'data.superpixels={min_size: 800}'
