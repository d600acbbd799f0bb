# Shell helpers for the demo and the benchmarks (the Rust tests have their own in tests/common).
# - registry_start DIR / registry_stop: Debian's docker-registry on a free loopback port
#   ($REGISTRY is then 127.0.0.1:PORT), storing under DIR.
# - testhost_boot / in_host CMD... / testhost_stop: a throw-away systemd host (systemd-nspawn on an
#   overlay of /).

registry_start() {
  local dir=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s/registry\nhttp:\n  addr: 127.0.0.1:%s\nlog:\n  level: error\n' \
    "$dir" "$port" > "$dir/registry.yml"
  docker-registry serve "$dir/registry.yml" > "$dir/registry.log" 2>&1 &
  REGISTRY_PID=$!
  REGISTRY=127.0.0.1:$port
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do sleep 0.1; done
}

registry_stop() {
  # SIGKILL: on SIGTERM the registry waits for idle keep-alive connections to drain.
  if [ -n "${REGISTRY_PID:-}" ]; then kill -KILL "$REGISTRY_PID" 2>/dev/null; wait "$REGISTRY_PID" 2>/dev/null || true; fi
  REGISTRY_PID=
}

testhost_boot() {
  TH_DIR=$(mktemp -d /var/tmp/testhost.XXXXXX)
  mkdir -p "$TH_DIR/upper" "$TH_DIR/work" "$TH_DIR/root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$TH_DIR/upper,workdir=$TH_DIR/work" "$TH_DIR/root"
  rm -f "$TH_DIR/root/etc/machine-id" "$TH_DIR/root/var/lib/dbus/machine-id"
  systemd-machine-id-setup --root="$TH_DIR/root" >/dev/null 2>&1
  # Services this machine enables (a database, the registry, timers that would touch the real
  # disk) would start in the host's shared network namespace too: mask them all.
  local units=(docker-registry.service nftables.service systemd-firstboot.service)
  local wants
  for wants in "$TH_DIR"/root/etc/systemd/system/{multi-user,timers}.target.wants/*; do
    [ -e "$wants" ] || [ -L "$wants" ] && units+=("$(basename "$wants")")
  done
  systemctl --root="$TH_DIR/root" mask "${units[@]}" >/dev/null 2>&1
  testhost_start
}

testhost_start() {
  SYSTEMD_SECCOMP=0 SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q -D "$TH_DIR/root" --boot \
    -M "th$$" --register=no --keep-unit --console=pipe --link-journal=no --capability=all \
    >"$TH_DIR/console.log" 2>&1 </dev/null &
  TH_NSPAWN=$!
  TH_LEADER=
  # The host's PID 1 is nspawn's child once that child has become systemd.
  for _ in $(seq 200); do
    TH_LEADER=$(pgrep -P "$TH_NSPAWN" || true)
    [ -n "$TH_LEADER" ] && [ "$(cat "/proc/$TH_LEADER/comm" 2>/dev/null)" = systemd ] && break
    TH_LEADER=
    sleep 0.05
  done
  [ -n "$TH_LEADER" ] || { echo "test host did not start: $(tail -5 "$TH_DIR/console.log")" >&2; return 1; }
  timeout 60 nsenter -t "$TH_LEADER" -a systemctl is-system-running --wait >/dev/null 2>&1 || true
}

in_host() { nsenter -t "$TH_LEADER" -a "$@"; }

testhost_stop() {
  [ -n "${TH_DIR:-}" ] || return 0
  if [ -n "${TH_NSPAWN:-}" ] && kill -0 "$TH_NSPAWN" 2>/dev/null; then
    in_host systemctl poweroff >/dev/null 2>&1 || kill -TERM "$TH_NSPAWN" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$TH_NSPAWN" 2>/dev/null || break; sleep 0.1; done
  fi
  umount "$TH_DIR/root" 2>/dev/null || umount -l "$TH_DIR/root" 2>/dev/null || true
  rm -rf "$TH_DIR"
  TH_DIR=
}
