# Builds and installs lxvirt on any distribution (docs/install.md).
#   make                                   the programs (if missing), man pages, completions
#   make install DESTDIR=/tmp/stage PREFIX=/usr
#   make uninstall                         removes what install put there (not /etc/lxvirt)
# packaging/build-deb makes the Debian packages with this Makefile.
#
# The programs are built only when missing (make does not know cargo's
# dependencies): run `cargo build --release --locked` after changing code.
# PROFILE=debug installs target/debug instead (the packaging check in CI).

CARGO ?= cargo
PROFILE ?= release
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/$(PROFILE)
GEN := $(BIN)/lxvirt-data

PREFIX ?= /usr
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBEXECDIR ?= $(PREFIX)/libexec
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
SYSCONFDIR ?= /etc
# systemd reads these under /usr/lib and /usr/local/lib alike.
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
DBUSSERVICEDIR ?= $(DATADIR)/dbus-1/system-services
# dbus-daemon and polkitd read these directories only, whatever the prefix.
DBUSPOLICYDIR ?= /usr/share/dbus-1/system.d
POLKITACTIONDIR ?= /usr/share/polkit-1/actions
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
# Debian's place; other distributions use $(DATADIR)/zsh/site-functions.
ZSHCOMPDIR ?= $(DATADIR)/zsh/vendor-completions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d

# The polkit action (org.lxvirt.lxvirt1.manage); installed only if present,
# so that a tree without it still installs.
POLKIT_ACTION := daemon/data/polkit/org.lxvirt.lxvirt1.policy

# lxvirtd looks for the monitor beside itself, then here; elsewhere the
# unit names it.
ifneq ($(LIBEXECDIR),/usr/libexec)
MONITOR_OPTION := --monitor=$(LIBEXECDIR)/lxvirt/lxvirt-monitor
endif

PROGRAMS := $(BIN)/lxvirtd $(BIN)/lxvirt $(BIN)/lxvirt-monitor
GENERATED := $(GEN)/lxvirt.1.gz $(GEN)/lxvirtd.8.gz $(GEN)/lxvirt.bash $(GEN)/_lxvirt $(GEN)/lxvirt.fish

all: $(PROGRAMS) $(GENERATED)

$(PROGRAMS) &:
	$(CARGO) build --locked $(if $(filter release,$(PROFILE)),--release,) -p lxvirtd -p lxvirt

$(GEN)/lxvirt.1.gz: $(BIN)/lxvirt
	@mkdir -p $(GEN)
	$(BIN)/lxvirt man > $(GEN)/lxvirt.1
	gzip -9nf $(GEN)/lxvirt.1

$(GEN)/lxvirtd.8.gz: $(BIN)/lxvirtd
	@mkdir -p $(GEN)
	$(BIN)/lxvirtd --man-page > $(GEN)/lxvirtd.8
	gzip -9nf $(GEN)/lxvirtd.8

$(GEN)/lxvirt.bash: $(BIN)/lxvirt
	@mkdir -p $(GEN)
	$(BIN)/lxvirt completions bash > $@

$(GEN)/_lxvirt: $(BIN)/lxvirt
	@mkdir -p $(GEN)
	$(BIN)/lxvirt completions zsh > $@

$(GEN)/lxvirt.fish: $(BIN)/lxvirt
	@mkdir -p $(GEN)
	$(BIN)/lxvirt completions fish > $@

install: all
	install -D -m 0755 $(BIN)/lxvirtd $(DESTDIR)$(SBINDIR)/lxvirtd
	install -D -m 0755 $(BIN)/lxvirt $(DESTDIR)$(BINDIR)/lxvirt
	install -D -m 0755 $(BIN)/lxvirt-monitor $(DESTDIR)$(LIBEXECDIR)/lxvirt/lxvirt-monitor
# The unit with this installation's paths (unchanged for PREFIX=/usr).
	install -d -m 0755 $(DESTDIR)$(SYSTEMDUNITDIR)
	sed -e 's|^ExecStart=/usr/sbin/lxvirtd|ExecStart=$(SBINDIR)/lxvirtd$(if $(MONITOR_OPTION), $(MONITOR_OPTION))|' \
		daemon/data/systemd/lxvirtd.service > $(DESTDIR)$(SYSTEMDUNITDIR)/lxvirtd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/lxvirtd.service
	sed -e 's|^ExecStop=/usr/bin/lxvirt|ExecStop=$(BINDIR)/lxvirt|' \
		daemon/data/systemd/lxvirt-guests.service > $(DESTDIR)$(SYSTEMDUNITDIR)/lxvirt-guests.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/lxvirt-guests.service
	install -D -m 0644 daemon/data/systemd/org.lxvirt.lxvirt1.service $(DESTDIR)$(DBUSSERVICEDIR)/org.lxvirt.lxvirt1.service
	install -D -m 0644 daemon/data/systemd/lxvirt.sysusers $(DESTDIR)$(SYSUSERSDIR)/lxvirt.conf
	install -D -m 0644 daemon/data/systemd/lxvirt.tmpfiles $(DESTDIR)$(TMPFILESDIR)/lxvirt.conf
	install -D -m 0644 daemon/data/org.lxvirt.lxvirt1.conf $(DESTDIR)$(DBUSPOLICYDIR)/org.lxvirt.lxvirt1.conf
	$(if $(wildcard $(POLKIT_ACTION)),install -D -m 0644 $(POLKIT_ACTION) $(DESTDIR)$(POLKITACTIONDIR)/org.lxvirt.lxvirt1.policy)
	install -D -m 0644 $(GEN)/lxvirt.1.gz $(DESTDIR)$(MANDIR)/man1/lxvirt.1.gz
	install -D -m 0644 $(GEN)/lxvirtd.8.gz $(DESTDIR)$(MANDIR)/man8/lxvirtd.8.gz
	install -D -m 0644 $(GEN)/lxvirt.bash $(DESTDIR)$(BASHCOMPDIR)/lxvirt
	install -D -m 0644 $(GEN)/_lxvirt $(DESTDIR)$(ZSHCOMPDIR)/_lxvirt
	install -D -m 0644 $(GEN)/lxvirt.fish $(DESTDIR)$(FISHCOMPDIR)/lxvirt.fish
# The example settings: never over a file already there.
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/lxvirt
	test -e $(DESTDIR)$(SYSCONFDIR)/lxvirt/lxvirtd.conf || \
		install -m 0644 daemon/data/lxvirtd.conf $(DESTDIR)$(SYSCONFDIR)/lxvirt/lxvirtd.conf

# Leaves /etc/lxvirt (settings, definitions) and /var/lib/lxvirt (images).
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/lxvirtd $(DESTDIR)$(BINDIR)/lxvirt \
		$(DESTDIR)$(LIBEXECDIR)/lxvirt/lxvirt-monitor \
		$(DESTDIR)$(SYSTEMDUNITDIR)/lxvirtd.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/lxvirt-guests.service \
		$(DESTDIR)$(DBUSSERVICEDIR)/org.lxvirt.lxvirt1.service \
		$(DESTDIR)$(SYSUSERSDIR)/lxvirt.conf $(DESTDIR)$(TMPFILESDIR)/lxvirt.conf \
		$(DESTDIR)$(DBUSPOLICYDIR)/org.lxvirt.lxvirt1.conf \
		$(DESTDIR)$(POLKITACTIONDIR)/org.lxvirt.lxvirt1.policy \
		$(DESTDIR)$(MANDIR)/man1/lxvirt.1.gz $(DESTDIR)$(MANDIR)/man8/lxvirtd.8.gz \
		$(DESTDIR)$(BASHCOMPDIR)/lxvirt $(DESTDIR)$(ZSHCOMPDIR)/_lxvirt \
		$(DESTDIR)$(FISHCOMPDIR)/lxvirt.fish
	-rmdir $(DESTDIR)$(LIBEXECDIR)/lxvirt

clean:
	rm -rf $(GEN)

.PHONY: all install uninstall clean
