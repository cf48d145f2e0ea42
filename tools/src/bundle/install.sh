#!/bin/sh
# Installs this dla-edge bundle on the board it was built for: checks the
# files against SHA256SUMS, installs the binary, models, configuration (an
# existing /etc/dla-edge/config.toml is kept; the new one goes next to it as
# config.toml.new), checks the configuration, then enables and starts the
# systemd service (or, without systemd, starts dla-edge in the background).
#
# usage: sudo ./install.sh [--root DIR] [--no-start]
#   --root DIR   install under DIR instead of / (an image being prepared, a
#                test); paths in the configuration follow, no users are made
#   --no-start   install only
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$here"
say() { echo "install.sh: $*"; }

if command -v sha256sum >/dev/null 2>&1; then
  grep -v ' SHA256SUMS$' SHA256SUMS | sha256sum --quiet -c - \
    || { say "the bundle is damaged: files do not match SHA256SUMS" >&2; exit 1; }
fi

install -d "$root/usr/bin" "$root/usr/share/dla-edge/models" "$root/etc/dla-edge" \
  "$root/var/lib/dla-edge" "$root/var/log"
# A running dla-edge keeps its binary busy: replace it by renaming.
install -m 755 bin/dla-edge "$root/usr/bin/.dla-edge.new"
mv -f "$root/usr/bin/.dla-edge.new" "$root/usr/bin/dla-edge"
if [ -d models ] && [ -n "$(ls models)" ]; then
  cp models/* "$root/usr/share/dla-edge/models/"
fi

config="$root/etc/dla-edge/config.toml"
fix_paths() { sed -e "s#/usr/share/dla-edge/#$root/usr/share/dla-edge/#g" \
                  -e "s#/var/lib/dla-edge/#$root/var/lib/dla-edge/#g" \
                  -e "s#/var/cache/dla-edge/#$root/var/cache/dla-edge/#g" config.toml; }
if [ -e "$config" ]; then
  fix_paths > "$config.new"
  say "kept $config; the bundle's version is $config.new"
else
  fix_paths > "$config"
fi
"$root/usr/bin/dla-edge" check-config --config "$config"

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  getent group gpio >/dev/null || groupadd --system gpio
  getent passwd dla-edge >/dev/null || useradd --system --no-create-home \
    --home-dir /var/lib/dla-edge --shell /usr/sbin/nologin --user-group dla-edge
  usermod -a -G video,gpio dla-edge || true
  install -m 644 dla-edge.service /etc/systemd/system/dla-edge.service
  systemctl daemon-reload
  systemctl enable dla-edge.service
  if [ "$start" = 1 ]; then
    systemctl restart dla-edge.service
    say "started: systemctl status dla-edge; journalctl -u dla-edge -f"
  fi
elif [ "$start" = 1 ]; then
  # No systemd here (a container, a test root): run it in the background.
  pidfile="$root/var/lib/dla-edge/dla-edge.pid"
  if [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
    say "stopped the previous dla-edge"
    sleep 1
  fi
  nohup "$root/usr/bin/dla-edge" run --config "$config" \
    >"$root/var/log/dla-edge.log" 2>&1 </dev/null &
  echo $! > "$pidfile"
  say "started dla-edge (pid $(cat "$pidfile")), log in $root/var/log/dla-edge.log"
fi
say "installed $(cat BUNDLE.json | tr -d '\n' | sed 's/  */ /g')"
