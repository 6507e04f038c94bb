#!/usr/bin/env bash
# Rebuilds the shipped models from the bundled data, on CPU, in one go (~10 min on 2 cores):
# datasets -> HDFS pretraining -> calibration -> OpenStack fine-tuning (vs from scratch) -> calibration
# -> evaluation reports under artifacts/metrics/ (+ the OpenStack learning curve). Deterministic for a given seed and torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
LOGAD=${LOGAD:-.venv/bin/logad}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
$LOGAD prepare all
$LOGAD pretrain --max-samples 200000 --checkpoint-every 50000 --eval-every 25000 --warmup-samples 10000
# HDFS is judged at its real anomaly share (2.93%): a 0.2% normal flag rate (the validation table
# in thresholds.json: F1 at 2.93% 0.976 at the 99.9th per method vs 0.935 at the 99.5th)
$LOGAD calibrate --model artifacts/models/hdfs --instability 0.02 --percentile 99.8
$LOGAD finetune --max-samples 100000 --checkpoint-every 50000 --eval-every 10000 --warmup-samples 5000
# OpenStack sessions are ~12% anomalous (validation split): a 1.5% normal flag rate buys recall there
$LOGAD calibrate --model artifacts/models/openstack --instability 0.02 --percentile 98.5
$LOGAD evaluate --model artifacts/models/hdfs
$LOGAD evaluate --model artifacts/models/openstack
# Learning curve (1/10/100% of the OpenStack normal training sessions, HDFS init vs scratch, 2 replicates): ~11 min on 1 core
$LOGAD learning-curve --fractions 0.01,0.1,1 --budget-samples 18000 --seed 1337 --replicates 2
# Instability benchmark at R in {0, .02, .05, .1}, 3 seeds, with DeepLog / PCA / Invariants Mining and
# the cost per window. The calibrations above seal R = 0.02 only as the starting level: the detector
# estimates each source's instability online and moves between the levels calibrate fitted (each
# level's thresholds spend the --percentile normal flag budget on the scores that catch the labelled
# validation anomalies perturbed at that level, not at one common percentile).
$LOGAD robustness --model artifacts/models/hdfs
$LOGAD robustness --model artifacts/models/openstack
$LOGAD early --model artifacts/models/hdfs
