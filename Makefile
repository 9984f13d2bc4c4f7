# Thin wrapper around meson/ninja. `make` builds into build/ (the CLI is
# build/ferry); `make demo` runs a live migration of the default guest;
# `make check` runs every test, in a normal and an ASan+UBSan build.
BUILD ?= build
ASAN_BUILD ?= build-asan
MESON ?= meson
WERROR ?= false

.PHONY: all deps demo check check-normal check-asan bench clean

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)

deps:
	@bash scripts/deps.sh

$(BUILD)/build.ninja: | deps
	$(MESON) setup $(BUILD) -Dwerror=$(WERROR) >/dev/null

$(ASAN_BUILD)/build.ninja: | deps
	$(MESON) setup $(ASAN_BUILD) -Dwerror=$(WERROR) -Db_sanitize=address,undefined \
		-Db_lundef=false -Dbuildtype=debug -Doptimization=1 >/dev/null

demo: all
	./$(BUILD)/ferry demo $(DEMO_ARGS)

check: deps
	@bash scripts/check.sh

bench: all
	@bash bench/run.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
