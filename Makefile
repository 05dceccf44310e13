# Each target sets itself up from a fresh clone (scripts/setup.sh creates .venv once).
.PHONY: setup train test lint app bench

# The datasets beside a checkout (../shared/datasets) unless HJT_DATA_DIR says otherwise; with
# neither, pass ARGS=--download on a machine that is online.
HJT_DATA_DIR ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),)
export HJT_DATA_DIR

setup:
	bash scripts/setup.sh

# The main job: class-conditional digits -> clothing transport (add ACCELERATE_ARGS to scale out,
# e.g. ACCELERATE_ARGS="--multi_gpu --num_processes 2 --main_process_port 0" OMP_NUM_THREADS=1:
# the threads are per process).
# --quiet: a failed run ends on its own one-line error, not on the launcher's traceback too;
# under --multi_gpu, torchrun gives a stopped run 120 s (not 30) to write its checkpoint.
TORCH_ELASTIC_SHUTDOWN_TIMEOUT ?= 120
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT
train: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} .venv/bin/accelerate launch --quiet $(ACCELERATE_ARGS) hjtranslate train digits-to-fashion $(ARGS)

test: setup
	.venv/bin/python -m pytest -q $(ARGS)

lint: setup
	.venv/bin/ruff check hjtranslate plugins apps tests benchmarks

app: setup
	.venv/bin/hjtranslate app $(ARGS)

# A benchmark script with its extra dependencies (torchcfm, scikit-image), one thread unless
# OMP_NUM_THREADS says otherwise, e.g. make bench ARGS="benchmarks/peers.py --table pnorm"
bench: setup
	@test -n "$(ARGS)" || { echo 'usage: make bench ARGS="benchmarks/SCRIPT.py [options]" (BENCHMARKS.md lists the commands)'; exit 2; }
	.venv/bin/python -m pip install -q -c constraints.txt -e ".[bench]"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} .venv/bin/python $(ARGS)
