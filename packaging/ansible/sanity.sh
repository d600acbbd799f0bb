#!/usr/bin/env bash
# Runs `ansible-test sanity` on the sysctr.sysctr Ansible collection, with the ansible-test of
# ANSIBLE_BIN (default: the one in PATH), for that installation's Python. Each sanity test's
# requirements are installed from PyPI into virtual environments kept in a temporary directory,
# which is removed on exit. Exits non-zero when a sanity test fails. Extra arguments are passed
# to ansible-test (e.g. --test pep8, -v).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${ANSIBLE_BIN:-}" ]; then
    bin="$(cd "$ANSIBLE_BIN" && pwd)"
else
    bin="$(dirname "$(command -v ansible-test)")"
fi
python="$bin/python"
[ -x "$python" ] || python="$bin/python3"
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
coll="$work/ansible_collections/sysctr/sysctr"
mkdir -p "$(dirname "$coll")"
cp -r "$here/sysctr" "$coll"
rm -rf "$coll/tests/output"

# ansible-test keeps its per-test virtual environments and its pip bootstrap script under
# ~/.ansible/test; a private HOME keeps them out of the user's and lets the temporary directory
# hold them. pip's own cache stays the user's, so later runs do not download the wheels again.
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pip}"
export HOME="$work/home"
# ansible-test bootstraps pip into each empty virtual environment with a get-pip.py that it
# downloads from a host outside PyPI; in its place, the environment's own ensurepip brings a pip
# that then installs the requested packages (the pinned pip among them) from PyPI.
pip_version="$("$python" -c 'from ansible_test._internal.python_requirements import get_venv_packages as g
from ansible_test._internal.host_configs import NativePythonConfig as P
print(g(P(version="'"$pyver"'", path=""))["pip"])')"
mkdir -p "$HOME/.ansible/test/cache"
cat >"$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py" <<'EOF'
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
EOF

# The cryptography package that ansible-core imports may warn about its own deprecations.
export PYTHONWARNINGS=ignore::UserWarning
cd "$coll"
PATH="$bin:$PATH" "$bin/ansible-test" sanity --python "$pyver" --color no "$@"
