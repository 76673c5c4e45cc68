#!/usr/bin/env bash
# APSCL's component ablation (its Table 2: FEM, SCL, MGD on and off) on CHAOST2 setting 1, fold 0, at
# the CPU preset, one tagged cpu_tables.sh run per component set and training seed:
#
#   bash scripts/apscl_ablation.sh [SEEDS] [COMPONENT SETS]
#   e.g. bash scripts/apscl_ablation.sh 0,1,2                      (the 8 sets, three seeds: 48 models)
#        bash scripts/apscl_ablation.sh 0 "none fem scl mgd all"   (seed 0, five sets)
#
# A set names the components that are on (none, fem, scl, mgd, fem-scl, fem-mgd, scl-mgd, all);
# results go to results/apscl_cpu-ablation-SET[-seedN]/ (seed 0 keeps no suffix, as for LMS-Net's
# ablations); "all" with seed 0 is the preset itself: its fold-0 model (runs/apscl_cpu) is linked under
# the tag when it exists (the same configuration and seed), trained there otherwise, so that the table
# is complete on its own. Arguments after the sets go to cpu_tables.sh; TRAIN_ONLY=1 and GROUP=upper|lower
# in the environment work as there.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-0}
sets=${2:-"none fem scl mgd fem-scl fem-mgd scl-mgd all"}
shift $(( $# > 2 ? 2 : $# ))
preset_run=runs/apscl_cpu/CHAOST2-setting1/fold0 tagged=runs/apscl_cpu-ablation-all/CHAOST2-setting1
for seed in ${seeds//,/ }; do
  for set in $sets; do
    overrides=()
    for component in fem scl mgd; do
      on=false
      case "-$set-" in *"-$component-"*|-all-) on=true ;; esac
      overrides+=(--set "model.options.$component=$on")
    done
    suffix=
    [ "$seed" = 0 ] || { overrides+=(--set "runtime.seed=$seed"); suffix=-seed$seed; }
    if [ "$set$suffix" = all ] && [ -f $preset_run/model.pt ] && [ ! -e $tagged/fold0 ]; then
      mkdir -p $tagged && ln -s ../../apscl_cpu/CHAOST2-setting1/fold0 $tagged/fold0
    fi
    TAG="ablation-$set$suffix" bash scripts/cpu_tables.sh apscl CHAOST2 1 0 "${overrides[@]}" "$@"
  done
done
