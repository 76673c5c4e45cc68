#!/usr/bin/env bash
# APSCL with or without its mutual guidance decoder (MGD, eq. 9-12) on CHAOST2, chosen per test fold
# on the inner validation split of setting 1 (issue 16): the preset, or the preset with the plain
# cosine-prototype decoder in place of the MGD (model.options.mgd=false: the candidate because fold 0's
# component ablation found MGD costly, README "APSCL and ADNet"; fold 0's choice, like every fold's, is
# made on its validation fold only).
# The steps and where they write: scripts/inner_choice.sh (SETTINGS="1 2" by default).
#
#   bash scripts/apscl_without_mgd.sh
set -euo pipefail
exec bash "$(dirname "$0")/inner_choice.sh" apscl no-mgd --set model.options.mgd=false
