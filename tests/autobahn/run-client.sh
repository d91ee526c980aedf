#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing *server* (cases 1-7 and 10) against
# `wschat connect --echo`: the suite plays the server and tests the client.
# Not part of `cargo test`: it needs Python 2.7, as run.sh does, and shares
# its virtualenv.
#
#   tests/autobahn/run-client.sh
#   PYTHON2=/path/to/python2.7 tests/autobahn/run-client.sh
#
# Reports go to target/autobahn-client-reports (open clients/index.html).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
out="$root/target/autobahn-client-reports"
addr="127.0.0.1:${AUTOBAHN_PORT:-9002}"

rm -rf "$out" && mkdir -p "$out"
cat >"$out/fuzzingserver.json" <<JSON
{
  "url": "ws://$addr",
  "outdir": "$out/clients",
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
(cd "$out" && PYTHONWARNINGS=ignore exec "$venv/bin/wstest" -m fuzzingserver -s fuzzingserver.json >wstest.log 2>&1) &
suite=$!
trap 'kill $suite 2>/dev/null' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
  sleep 0.2
done

# The suite tells a client how many cases there are in one text message.
# Without --echo, wschat connect prints it; stdin stays open (sleep) so that
# the client does not close before the message arrives.
count=$(sleep 3 | "$bin" connect "ws://$addr/getCaseCount" 2>/dev/null)
echo "cases: $count"
for i in $(seq "$count"); do
  "$bin" connect --echo "ws://$addr/runCase?case=$i&agent=wschat" \
    </dev/null >/dev/null 2>>"$out/client.log" || true
done
sleep 1 | "$bin" connect "ws://$addr/updateReports?agent=wschat" >/dev/null 2>&1 || true
python3 "$here/summarize.py" "$out/clients"
