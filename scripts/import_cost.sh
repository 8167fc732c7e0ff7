#!/bin/bash
# Wall seconds (best of N) of the imports a ClientApp process pays per message.
PY=${PY:-python}
N=${N:-5}
for mod in "import flwr.clientapp, torch" "import fedforget.clients.app"; do
  best=999
  for i in $(seq $N); do
    s=$(date +%s.%N); OMP_NUM_THREADS=1 $PY -c "$mod" 2>/dev/null; e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc); best=$(echo "if ($t < $best) $t else $best" | bc)
  done
  echo "$mod: best of $N = $best s"
done
uptime
