#!/usr/bin/env bash
# Installs hat-basicsr with everything it needs into the active Python environment
# (or into the interpreter given by $PYTHON).
#
# Two things make this more than one `pip install`:
# * PyPI has only an sdist of basicsr 1.4.2; its setup.py imports torch, so an isolated
#   build would download a second multi-GB torch just to build it. We build it against the
#   torch installed in step 1 instead (--no-build-isolation, a few seconds).
# * basicsr 1.4.2 requires `tb-nightly` (no longer on PyPI) and the GUI `opencv-python`;
#   we install it --no-deps and pyproject.toml lists its real runtime requirements
#   (tensorboard, opencv-python-headless, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
EXTRAS=${HAT_EXTRAS-test}  # HAT_EXTRAS="" installs no extras

# Pinned to the versions the suite was last run with (requirements/constraints.txt), so a fresh
# machine installs what was tested, not whatever the index serves that day. HAT_CONSTRAINTS=""
# resolves the newest releases within pyproject.toml's ranges instead.
CONSTRAINTS=${HAT_CONSTRAINTS-requirements/constraints.txt}
PIP=("$PYTHON" -m pip install ${CONSTRAINTS:+-c "$CONSTRAINTS"})

"${PIP[@]}" --upgrade pip setuptools wheel cython
"${PIP[@]}" -e ".${EXTRAS:+[$EXTRAS]}"
"${PIP[@]}" --no-deps --no-build-isolation "basicsr==1.4.2"
"$PYTHON" -c "import hat_basicsr, basicsr, torchvision; print('hat_basicsr', hat_basicsr.__version__, '| basicsr', basicsr.__version__, '| torch', __import__('torch').__version__)"
