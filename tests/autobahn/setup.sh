# Sourced by run.sh and run-client.sh: installs the Autobahn suite once, into
# target/autobahn-venv (it needs Python 2.7, which the suite was written for),
# and builds wschat in release mode. Sets $root, $venv and $bin.
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/autobahn-venv"

# The first Python 2.7 that actually runs (a pyenv shim may not).
python2="${PYTHON2:-}"
for candidate in python2.7 "$HOME"/.pyenv/versions/2.7*/bin/python2.7; do
  [ -n "$python2" ] && break
  "$candidate" --version >/dev/null 2>&1 && python2="$candidate"
done
if [ ! -x "$venv/bin/wstest" ]; then
  [ -n "$python2" ] || { echo "$(basename "$0"): needs Python 2.7 (set PYTHON2)" >&2; exit 2; }
  "$python2" -m pip install -q "virtualenv==20.15.1"
  "$python2" -m virtualenv -q "$venv"
  "$venv/bin/pip" install -q -c "$here/constraints.txt" autobahntestsuite==0.8.2
fi

cargo build --release --manifest-path "$root/Cargo.toml"
# Where cargo put the binary: CARGO_TARGET_DIR if set, else target/.
bin="${CARGO_TARGET_DIR:-$root/target}/release/wschat"
