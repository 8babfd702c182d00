#!/usr/bin/env bash
# Loopback load test of examples/SpamDetection.WebApi: wrk at 1, 8 and 32 connections, SECONDS each (default 15), and
# in every run the served model file is replaced halfway through (an atomic rename, as mlContext.Model.SaveAtomically
# does), alternating between two models. Prints requests/s, p50/p99 latency, errors and the reload of each run as a
# markdown table; exits 1 if any request failed or a reload did not happen.
#   examples/SpamDetection.WebApi/loadtest.sh [SECONDS]
# SWAP=0 runs the same load without replacing the model, for comparison.
# MODEL_A / MODEL_B: two saved spam models; by default trained here once with the SpamDetection example (--epochs 3
# and --epochs 1, about 3 minutes each on 2 cores) into artifacts/loadtest/. Needs wrk, curl and jq (apt-get install).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-15}
swap_models=${SWAP:-1}
port=${PORT:-5199}
work=artifacts/loadtest
model_a=${MODEL_A:-$work/model-a/SpamModel.mlnet}
model_b=${MODEL_B:-$work/model-b/SpamModel.mlnet}
for tool in wrk curl jq; do command -v $tool > /dev/null || { echo "$tool is needed: apt-get install -y $tool" >&2; exit 2; }; done

[ -f "$model_a" ] || dotnet run -c Release --project examples/SpamDetection -- --epochs 3 --output "$(dirname "$model_a")"
[ -f "$model_b" ] || dotnet run -c Release --project examples/SpamDetection -- --epochs 1 --output "$(dirname "$model_b")"
dotnet build -c Release examples/SpamDetection.WebApi > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }

served=$work/served/SpamModel.mlnet
mkdir -p "$(dirname "$served")"
cp "$model_a" "$served"
base=http://127.0.0.1:$port
env ModelPath="$served" Logging__LogLevel__Default=Warning Logging__LogLevel__SpamDetection.WebApi=Information \
  dotnet examples/SpamDetection.WebApi/bin/Release/net10.0/SpamDetection.WebApi.dll --urls "$base" > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2> /dev/null || true; wait $server 2> /dev/null || true' EXIT
for _ in $(seq 1200); do curl -sf "$base/health" > /dev/null && break; kill -0 $server 2> /dev/null || { cat "$work/server.log"; exit 1; }; sleep 0.1; done
health() { curl -sf "$base/health"; }
echo "sample: $(curl -sf -H 'Content-Type: application/json' -d '{"text": "Subject: You have WON $1,000,000 - claim now"}' "$base/predict" | jq -c '{predictedLabel, score, modelVersion}')"
echo

echo "| clients | requests | requests/s | p50 ms | p99 ms | max ms | non-2xx | socket errors | model swap (version, reload seen after) |"
echo "|---|---|---|---|---|---|---|---|---|"
failed=0
next=$model_b
for clients in 1 8 32; do
  before=$(health | jq .model.version)
  wrk -t1 -c"$clients" -d"${seconds}s" --timeout 10s --latency -s examples/SpamDetection.WebApi/loadtest.lua "$base" > "$work/wrk-$clients.txt" &
  load=$!
  sleep "$(( seconds / 2 ))"
  # The new file is copied beside the served one and renamed over it: readers see the old file or the new one, whole.
  [ "$swap_models" = 0 ] || { cp "$next" "$served.tmp" && mv -f "$served.tmp" "$served"; }
  swapped=$(date +%s%N)
  seen=""
  while kill -0 $load 2> /dev/null; do
    if [ -z "$seen" ] && [ "$(health | jq .model.version)" -gt "$before" ]; then seen=$(( ($(date +%s%N) - swapped) / 1000000 )); fi
    sleep 0.1
  done
  wait $load || { cat "$work/wrk-$clients.txt"; exit 1; }
  after=$(health)
  [ -n "$seen" ] || [ "$(jq .model.version <<< "$after")" -le "$before" ] || seen="after the run"
  result=$(grep '^RESULT' "$work/wrk-$clients.txt")
  value() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<< "$result"; }
  requests=$(value requests); status=$(value status)
  sockets=$(( $(value connect) + $(value read) + $(value write) + $(value timeout) ))
  rate=$(awk "BEGIN { printf \"%.0f\", $requests / $(value seconds) }")
  swap="v$before → v$(jq .model.version <<< "$after"), ${seen:-never} ms"
  [ "$swap_models" != 0 ] || swap="none (SWAP=0)"
  [ "$(jq -r .lastReloadError <<< "$after")" = null ] || swap="$swap; reload error: $(jq -r .lastReloadError.message <<< "$after")"
  echo "| $clients | $requests | $rate | $(value p50_ms) | $(value p99_ms) | $(value max_ms) | $status | $sockets | $swap |"
  if [ "$status" != 0 ] || [ "$sockets" != 0 ]; then failed=1; fi
  if [ "$swap_models" != 0 ] && [ "$(jq .model.version <<< "$after")" -le "$before" ]; then failed=1; fi
  [ "$next" = "$model_b" ] && next=$model_a || next=$model_b
done
echo
echo "server: $(health | jq -c '{status, version: .model.version, reloads, failedReloads, retiredModelsInUse}')"
exit $failed
