# ls4: `make run` starts the local stack and processes the sample collections;
# `make test` runs the whole suite on its own stack. See README.md.
SHELL := /bin/bash
STACK := include/stack/stack.sh
ENV := source include/stack/env.sh &&

.PHONY: install run stop status test unit bench-raster bench-parse bench-index bench-wms bench-idle bench-load lock

install:
	bash include/stack/install.sh

run: install
	$(STACK) start
	$(ENV) "$$LS4_VENV/bin/python" include/run_sample.py

stop:
	$(STACK) stop

status:
	$(STACK) status

test: install
	$(ENV) "$$LS4_VENV/bin/python" -m pytest tests

unit: install
	$(ENV) "$$LS4_VENV/bin/python" -m pytest tests/unit

bench-raster: install
	$(ENV) "$$LS4_VENV/bin/python" benchmarks/bench_raster.py

bench-parse: install
	$(ENV) "$$LS4_VENV/bin/python" benchmarks/bench_parse.py

bench-index: install
	$(ENV) "$$LS4_VENV/bin/python" benchmarks/bench_index.py

bench-wms: install
	$(ENV) "$$LS4_VENV/bin/python" benchmarks/bench_wms.py

bench-idle: install
	$(ENV) "$$LS4_VENV/bin/python" benchmarks/bench_idle.py

bench-load: install
	$(ENV) "$$LS4_VENV/bin/python" benchmarks/bench_load.py

lock:
	uv pip compile requirements.txt --python-version 3.11 --generate-hashes -o requirements.lock
	sed '/^# test and local-stack tooling/,$$d' requirements.txt | uv pip compile - --python-version 3.11 --generate-hashes -c requirements.lock --custom-compile-command "make lock" -o include/docker/requirements.lock
