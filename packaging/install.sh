#!/bin/sh
# Installs ringgate on a Debian (or any systemd) host: the binary, the unit and its
# system user, a default config (kept if one is there), the logrotate file, and the tuning
# files and docs (to apply by hand: see tuning/README.md). Run from the source tree after
# `cargo build --release`, as root:
#
#   sudo packaging/install.sh            # then: systemctl enable --now ringgate
#
# DESTDIR=/some/dir installs into that tree instead (nothing is started, no user made):
# for packaging, and for the test that checks the installed tree.
set -eu

# DESTDIR and BIN as the caller gave them, relative to where it ran us.
here=$(pwd)
case ${DESTDIR:-} in ""|/*) ;; *) DESTDIR="$here/$DESTDIR" ;; esac
case ${BIN:-} in ""|/*) ;; *) BIN="$here/$BIN" ;; esac
cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
BIN=${BIN:-target/release/ringgate}
if [ ! -x "$BIN" ]; then
    echo "install.sh: $BIN not found: run cargo build --release first (or set BIN)" >&2
    exit 1
fi

install -D -m 0755 "$BIN" "$DESTDIR/usr/local/bin/ringgate"
install -D -m 0644 systemd/ringgate.service "$DESTDIR/etc/systemd/system/ringgate.service"
install -D -m 0644 systemd/ringgate.sysusers.conf "$DESTDIR/usr/lib/sysusers.d/ringgate.conf"
install -D -m 0644 tuning/logrotate/ringgate "$DESTDIR/etc/logrotate.d/ringgate"
# The config holds secrets once apps or tokens are added: root and the service group
# only. Made once: an operator who opened it to the service user (for the admin API's
# config edits) keeps that on upgrades.
new_config_dir=
if [ ! -d "$DESTDIR/etc/ringgate" ]; then
    install -d -m 0750 "$DESTDIR/etc/ringgate"
    new_config_dir=1
fi
if [ ! -e "$DESTDIR/etc/ringgate/ringgate.toml" ]; then
    install -m 0640 packaging/ringgate.toml "$DESTDIR/etc/ringgate/ringgate.toml"
fi
share="$DESTDIR/usr/local/share/ringgate"
for f in tuning/sysctl.d/*.conf; do
    install -D -m 0644 "$f" "$share/$f"
done
install -D -m 0755 tuning/irq-pin.sh "$share/tuning/irq-pin.sh"
install -D -m 0644 tuning/README.md "$share/tuning/README.md"
install -D -m 0644 README.md "$DESTDIR/usr/local/share/doc/ringgate/README.md"
install -D -m 0644 systemd/README.md "$DESTDIR/usr/local/share/doc/ringgate/systemd.md"

"$DESTDIR/usr/local/bin/ringgate" check --config "$DESTDIR/etc/ringgate/ringgate.toml"

if [ -z "$DESTDIR" ]; then
    systemd-sysusers /usr/lib/sysusers.d/ringgate.conf
    if [ -n "$new_config_dir" ]; then
        chown root:ringgate /etc/ringgate /etc/ringgate/ringgate.toml
    fi
    systemctl daemon-reload
    echo "installed. First install: systemctl enable --now ringgate; upgrade: systemctl try-restart ringgate"
fi
