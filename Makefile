# The README's commands: `make demo` (set up + convert, check and port a bundled sample) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo-out

.PHONY: venv demo test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing tf2torch and its dependencies into $(VENV) (first run only, a few minutes; log: $(VENV)/install.log)..."
	@$(BIN)/python -m pip install -c constraints.txt -e ".[convert,tf,test]" > $(VENV)/install.log 2>&1 \
	   || { tail -n 30 $(VENV)/install.log; echo "install failed; full log: $(VENV)/install.log"; exit 1; }
	@# tf-keras reads Keras-2 SavedModels (port tests); it requires the full 'tensorflow' wheel, which would
	@# clash with tensorflow-cpu, so it goes in without dependencies.
	@# keras-hub (backbone fixtures) likewise: its dependencies would pull the full tensorflow wheel.
	@$(BIN)/python -m pip install --no-deps "tf-keras>=2.15" "keras-hub==0.32.*" regex tokenizers >> $(VENV)/install.log 2>&1 \
	   || { tail -n 30 $(VENV)/install.log; echo "install failed; full log: $(VENV)/install.log"; exit 1; }
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	@$(BIN)/python -m fixtures.models build cnn --print-path > .demo-source
	@$(BIN)/tf2torch convert "$$(cat .demo-source)/saved_model" -o $(DEMO) --force
	@$(BIN)/tf2torch parity "$$(cat .demo-source)/saved_model" $(DEMO)
	@$(BIN)/tf2torch port "$$(cat .demo-source)/model.keras" -o $(DEMO)-port --class-name SmallCNN --force
	@echo "ported source: $(DEMO)-port/model.py"
	@rm -f .demo-source

test: $(STAMP)
	@# two workers, one test file each at a time (module fixtures stay in one process); the 15 slowest printed
	@$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

test-fast: $(STAMP)
	@$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

bench: $(STAMP)
	@test -x /tmp/torchfix-venv/bin/torchfix || { $(PYTHON) -m venv /tmp/torchfix-venv && /tmp/torchfix-venv/bin/pip install -q torchfix; }
	@$(BIN)/python -m benchmarks.convert_bench
	@$(BIN)/python -m benchmarks.latency_bench
	@$(BIN)/python benchmarks/lint/bench.py --torchfix /tmp/torchfix-venv/bin/torchfix

clean:
	rm -rf $(VENV) $(DEMO) $(DEMO)-port .cache
