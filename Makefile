# The two commands: `make run` and `make test`. Both set everything up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000
DEVICES ?= 4
# The simulated cameras' video: every camera of the live session publishes, and this machine
# encodes all of them as well as serving the relay.
VIDEO_SIZE ?= 640x480
VIDEO_FPS ?= 15
# 1: a simulated stand-in operator starts a demo session and decides Ghost's proposals.
STANDIN ?= 1
STANDIN_FLAG = $(if $(filter 0,$(STANDIN)),,--stand-in)
# 1: the stand-in uploads a built-in click track to its session and plays it (music cues).
MUSIC ?= 1
MUSIC_FLAG = $(if $(filter 0,$(MUSIC)),,--music)

NODE := $(shell command -v node)
CONVEX_DEPS := convex/node_modules/.package-lock.json

.PHONY: run run-scaled preflight preflight-scaled test lint format install migrate clean convex-deps convex-test

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "MotionMix needs Python 3.11, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) convex-deps

# The Convex functions and their local bridge need Node; without it the ledger waits in the
# outbox and the tests that need the bridge say so.
$(CONVEX_DEPS): convex/package-lock.json
	cd convex && npm ci --no-audit --no-fund --loglevel=error

convex-deps:
ifneq ($(NODE),)
	@$(MAKE) --no-print-directory $(CONVEX_DEPS)
else
	@echo "Node.js not found: skipping convex/ (the ledger will wait in the outbox)."
endif

convex-test: convex-deps
ifneq ($(NODE),)
	cd convex && npm test --silent
endif

migrate: $(STAMP)
	@$(PY) manage.py migrate --noinput -v0

# The demo shoot switches heroes sooner than a real take would, so Ghost shows itself quickly.
run: export MOTIONMIX_GHOST_HERO_STALE_S ?= 20
run: export MOTIONMIX_GHOST_CADENCE_S ?= 40
run: export MOTIONMIX_ICE_HOST_ADDRESSES ?= 127.0.0.1
run: migrate convex-deps
	@$(PY) manage.py serve --host $(HOST) --port $(PORT) --simulate $(DEVICES) --video-size $(VIDEO_SIZE) --video-fps $(VIDEO_FPS) --demo-operator --ledger-bridge $(STANDIN_FLAG) $(MUSIC_FLAG)

# The scaled profile on this machine (docs/deploy.md): PostgreSQL and Redis (these defaults, the
# database created if missing), two web processes behind a built-in proxy on $(PORT), the hero
# relay process, a Celery worker and beat; DEBUG off, static files collected. Migrations run
# against PostgreSQL inside `run_scaled`, once the database exists.
run-scaled: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/motionmix
run-scaled: export REDIS_URL ?= redis://127.0.0.1:6379/0
run-scaled: export MOTIONMIX_GHOST_HERO_STALE_S ?= 20
run-scaled: export MOTIONMIX_GHOST_CADENCE_S ?= 40
run-scaled: export MOTIONMIX_ICE_HOST_ADDRESSES ?= 127.0.0.1
run-scaled: $(STAMP) convex-deps
	@$(PY) manage.py run_scaled --host $(HOST) --port $(PORT) --simulate $(DEVICES) --video-size $(VIDEO_SIZE) --video-fps $(VIDEO_FPS) --ledger-bridge $(STANDIN_FLAG) $(if $(STANDIN_FLAG),$(MUSIC_FLAG))

# Go/no-go against a running `make run` or `make run-scaled` on HOST:PORT (docs/preflight.md);
# the scaled one is given the rehearsal's own settings, as docs/deploy.md says.
preflight: $(STAMP)
	@$(PY) manage.py preflight --url http://$(HOST):$(PORT)

preflight-scaled: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/motionmix
preflight-scaled: export REDIS_URL ?= redis://127.0.0.1:6379/0
preflight-scaled: $(STAMP)
	@test -f var/scaled_secret_key || { echo "No var/scaled_secret_key: start make run-scaled first."; exit 2; }
	@DJANGO_SECRET_KEY="$$(cat var/scaled_secret_key)" DJANGO_ALLOWED_HOSTS='localhost,127.0.0.1,[::1]' \
	  MOTIONMIX_LOCAL_REHEARSAL=1 DJANGO_SECURE_SSL_REDIRECT=0 DJANGO_SECURE_COOKIES=0 DJANGO_HSTS_SECONDS=0 \
	  $(PY) manage.py preflight --url http://$(HOST):$(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint convex-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
