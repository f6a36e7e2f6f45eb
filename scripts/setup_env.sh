# Sourced by run_tests.sh and run_all.sh: create (or reuse) the virtual environment with the pinned stack.
# Re-installs only when requirements.txt or pyproject.toml change (a stamp file records their hash).
VENV="${AIOLI_VENV:-.venv}"
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV with $($PYTHON_BIN --version 2>&1)"
  "$PYTHON_BIN" -m venv "$VENV"
fi
stamp="$VENV/.aioli-installed"
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing the pinned requirements into $VENV (about 2 minutes the first time)"
  # pip prints one harmless 'Location ... is ignored' line per local index on the project's machines.
  "$VENV/bin/pip" install --disable-pip-version-check -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import torch, transformers, aioli_repro" || { echo "[setup] installation failed" >&2; exit 1; }
  echo "$want" > "$stamp"
  "$VENV/bin/python" -c "from aioli_repro.allocator import find_tcmalloc; raise SystemExit(find_tcmalloc() is None)" ||
    echo "[setup] optional: apt-get install libtcmalloc-minimal4 makes CPU training about 1.4x faster (same numbers)"
fi
export PATH="$PWD/$VENV/bin:$PATH"
# Nothing at run time may reach the network unless a user asks for SlimPajama or the Pythia tokenizer.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
