#!/usr/bin/env bash
# 10 back-to-back runs of the default matrix for the gate study (build 1b1b9f6, measurement code unchanged since)
cd /tmp/study
export QUANTBENCH_CACHE=/tmp/study/cache
/tmp/old-bin/quantbench fetch > fetch.log 2>&1
for i in $(seq 1 10); do
  echo "run $i start $(date -u +%FT%TZ)" >> progress.log
  /tmp/old-bin/quantbench run --out /tmp/study/runs --no-plots > run-$i.log 2>&1
  echo "run $i exit $? end $(date -u +%FT%TZ)" >> progress.log
done
echo done >> progress.log
