#!/usr/bin/env bash
# The checks that need a GPU, in one command that fits a short lease:
#
#   bash benchmarks/device_check.sh OUT_DIR [SECONDS]
#
# 1. the test suite on CUDA (SKVAE_TEST_DEVICE=cuda), 15 workers of one
#    thread each: 8 workers of 16 threads on 16 cores got through half the
#    suite in the time these take for all of it. -v writes each result as it
#    ends, so a run cut short still names its failures;
# 2. benchmarks/devices.py: the default detector and density on CUDA against
#    the CPU of the same machine;
# 3. benchmarks/speed.py's fit section on CUDA at 10^4 and 10^5 rows.
#
# SECONDS (default 480) is split 45/35/20 % between them; each step is
# stopped at its share and the next one runs. Logs and JSON lines go to
# OUT_DIR. Data sets come from $SKVAE_DATA_DIR (../shared/data/anomaly
# beside the repository by default): copy them into the tree where that
# folder does not travel. Needs pytest-xdist.
set -u
out=${1:?usage: bash benchmarks/device_check.sh OUT_DIR [SECONDS]}
seconds=${2:-480}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$python -c "import sys, torch, sklearn, numpy; print('Python', sys.version.split()[0],
'torch', torch.__version__, 'scikit-learn', sklearn.__version__, 'numpy',
numpy.__version__, 'CUDA', torch.cuda.is_available())"

echo "== tests"
SKVAE_TEST_DEVICE=cuda timeout $((seconds * 45 / 100)) $python -m pytest -n 15 -v \
    -p no:cacheprovider --tb=short >"$out/tests.log" 2>&1
echo "pytest exit status $? (124: stopped at its time limit)"
grep -E "^(FAILED|ERROR) " "$out/tests.log"
grep -cE "^\[gw[0-9]+\] \[ *[0-9]+%\] PASSED" "$out/tests.log" | sed 's/$/ passed/'
tail -3 "$out/tests.log"

echo "== devices"
timeout $((seconds * 35 / 100)) $python benchmarks/devices.py \
    --runs "$out/devices.jsonl" >"$out/devices.log" 2>&1
echo "devices.py exit status $?"
grep -E "^(VAEOutlierDetector|GaussianVAE) " "$out/devices.log" || tail -5 "$out/devices.log"

echo "== speed"
timeout $((seconds * 20 / 100)) $python benchmarks/speed.py --device cuda \
    --sections fit --n 1e4 1e5 --repeats 1 --no-pyod >"$out/speed.log" 2>&1
echo "speed.py exit status $?"
tail -8 "$out/speed.log"
