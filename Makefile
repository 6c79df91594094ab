# nginx-meta-webhook
#
#   make            build/ngx_http_meta_webhook_module.so against Debian's
#                   nginx (nginx-dev), or NGINX_SRC=/path/to/nginx-x.y.z
#   make run        start the webhook endpoint on 127.0.0.1:8080
#   make test       the whole suite with prove
#   make bench      benchmarks (bench/README.md)
#   make fuzz       run the fuzzers for FUZZ_SECONDS each (clang)

NGINX_SRC   ?= /usr/share/nginx/src
NGINX_BIN   ?= /usr/sbin/nginx
BUILD       := $(CURDIR)/build
OBJS        := $(BUILD)/nginx
MODULE      := $(BUILD)/ngx_http_meta_webhook_module.so

# Debian's nginx-dev records the flags its binary was built with; a module
# must be configured with the same ones to be binary compatible.
ifneq ($(wildcard $(NGINX_SRC)/conf_flags),)
NGINX_CONF_FLAGS ?= $(shell bash -c '. $(NGINX_SRC)/conf_flags && \
                      echo "$${NGX_CONF_FLAGS[@]}"')
else
NGINX_CONF_FLAGS ?= --with-compat --with-threads --with-http_ssl_module
endif

CORE_SRCS   := $(wildcard src/mw_*.c)
CORE_HDRS   := src/mw_core.h src/mw_state.h
NGX_SRCS    := $(wildcard src/ngx_http_meta_webhook*.c src/*.h)

UNIT_SRCS   := $(wildcard t/unit/test_*.c)
UNIT_BINS   := $(patsubst t/unit/%.c,$(BUILD)/t/%,$(UNIT_SRCS))
UNIT_CFLAGS := -g -O1 -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror \
               -fsanitize=address,undefined -fno-omit-frame-pointer \
               -Isrc -It/unit
UNIT_LIBS   := -ljansson -lcrypto

DEB_PKGS    := nginx nginx-dev libjansson-dev libcurl4-openssl-dev \
               libmemcached-dev memcached libpcre2-dev zlib1g-dev \
               libssl-dev build-essential perl libjson-pp-perl openssl curl

.PHONY: all deps run test unit bench fuzz clean

all: $(MODULE)

# Installs only what is missing, so a ready machine pays nothing.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	        | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	        --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@# Debian starts the packaged nginx on port 80; the project's own
	@# instances do not need it, and it must not hold ports meanwhile.
	@if [ -e /run/nginx.pid ] && [ -n "$$CI" ]; then \
	    $(NGINX_BIN) -s stop 2>/dev/null || true; fi

$(OBJS)/objs/Makefile: config $(NGINX_SRC)/src/core/nginx.h
	rm -rf $(OBJS)
	mkdir -p $(BUILD)
	cp -r $(NGINX_SRC) $(OBJS)
	chmod -R u+w $(OBJS)
	cd $(OBJS) && ./configure $(NGINX_CONF_FLAGS) \
	    --add-dynamic-module=$(CURDIR) >$(BUILD)/configure.log 2>&1 \
	    || { tail -20 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(OBJS)/objs/Makefile $(CORE_SRCS) $(CORE_HDRS) $(NGX_SRCS)
	$(MAKE) -C $(OBJS) -f objs/Makefile modules
	@# a new file, renamed into place: a running nginx keeps its mapping
	cp $(OBJS)/objs/ngx_http_meta_webhook_module.so $@.tmp
	mv -f $@.tmp $@

$(BUILD)/t/%: t/unit/%.c $(CORE_SRCS) $(CORE_HDRS) t/unit/tap.h \
              t/unit/tagged_alloc.h t/unit/json_same.h
	@mkdir -p $(BUILD)/t
	$(CC) $(UNIT_CFLAGS) -o $@ $< $(CORE_SRCS) $(UNIT_LIBS)

unit: $(UNIT_BINS)

run: deps all
	@sh scripts/run.sh

test: deps all unit
	prove -j2 -I t/lib t/*.t $(UNIT_BINS)

bench: deps all
	@sh bench/run.sh; rc=$$?; sh bench/send.sh || rc=1; exit $$rc

fuzz:
	@sh fuzz/run.sh

clean:
	rm -rf $(BUILD)
