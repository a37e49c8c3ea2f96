#!/usr/bin/env bash
# scripts/test 5 times in a row while a CPU burner spins on every core
cd /work/main
burners=()
for c in $(seq 1 "$(nproc)"); do ( while :; do :; done ) & burners+=($!); done
echo "burners: ${burners[*]} on $(nproc) cores, start $(date -u +%FT%TZ)" > /tmp/busy/summary.log
for i in 1 2 3 4 5; do
  t0=$(date +%s)
  scripts/test > /tmp/busy/test-$i.log 2>&1
  rc=$?
  echo "scripts/test #$i exit $rc in $(( $(date +%s) - t0 )) s; $(grep -h '^test result' /tmp/busy/test-$i.log | awk '{p+=$4; f+=$6} END {print p" passed, "f" failed"}')" >> /tmp/busy/summary.log
done
kill "${burners[@]}"
echo "end $(date -u +%FT%TZ)" >> /tmp/busy/summary.log
