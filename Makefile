# Shortcuts for Linux and macOS (Windows: see the README for the same commands).
PY ?= .venv/bin/python

.venv/done: requirements.txt
	python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && touch $@

demo: .venv/done
	$(PY) demo.py

test: .venv/done
	$(PY) -m pytest

package: .venv/done
	$(PY) -m PyInstaller --noconfirm build.spec
	@ls -l dist/

bench: .venv/done
	$(PY) -m bench

lint: .venv/done
	.venv/bin/ruff check .

.PHONY: demo test package bench lint
