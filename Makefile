# The README's commands. Everything installs into a project-local .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint run broker-start broker-stop clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/engagement demo

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

run: install
	$(BIN)/engagement run

broker-start: install
	$(BIN)/engagement broker start

broker-stop: install
	$(BIN)/engagement broker stop

clean:
	-$(BIN)/engagement broker stop
	rm -rf $(VENV) var
