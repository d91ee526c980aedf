#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (cases 1-7 and 10) against
# `wschat --echo` and prints a summary. Not part of `cargo test`: it needs
# Python 2.7, which the suite was written for.
#
#   tests/autobahn/run.sh            # builds wschat, starts it, runs the suite
#   PYTHON2=/path/to/python2.7 tests/autobahn/run.sh
#
# The suite is installed once into target/autobahn-venv from PyPI, with the
# versions pinned in constraints.txt. Reports go to target/autobahn-reports;
# open index.html there for the case-by-case detail.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
out="$root/target/autobahn-reports"
addr="127.0.0.1:${AUTOBAHN_PORT:-9001}"
"$bin" --echo --listen "$addr" --max-message 16777216 2>"$root/target/autobahn-server.log" &
server=$!
trap 'kill $server' EXIT
sleep 0.5

rm -rf "$out" && mkdir -p "$out"
cat >"$out/fuzzingclient.json" <<JSON
{
  "outdir": "$out",
  "servers": [{"agent": "wschat", "url": "ws://$addr"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
(cd "$out" && PYTHONWARNINGS=ignore "$venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json >wstest.log 2>&1)
python3 "$here/summarize.py" "$out"
