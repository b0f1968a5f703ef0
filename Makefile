# FusedEO developer commands. Every target that runs code sets up first
# (scripts/setup.sh is idempotent and fast once everything is installed).

.PHONY: setup test demo package bench clean

setup:
	bash scripts/setup.sh

test: setup
	bash scripts/run_tests.sh

demo: setup
	bash scripts/demo.sh

package:
	bash scripts/package.sh

bench: setup
	bash scripts/with_env.sh .venv/bin/python benchmarks/embed_mosaiks.py

clean:
	rm -rf .build dist
