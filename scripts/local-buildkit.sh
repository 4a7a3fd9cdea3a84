#!/usr/bin/env bash
# Set up the real local parts the tests talk to, from Debian packages only (no internet):
#   - dockerd 20.10 (Debian docker.io), whose embedded BuildKit we reach as docker://
#   - a plain registry on 127.0.0.1:5000 and one with htpasswd auth on 127.0.0.1:5001
#   - a busybox base image (from busybox-static) pushed to both registries
#   - the tools the tests run (OpenSSH's client tools, ps, git)
#   - when a buildkitd binary is at hand (BUILDKITD=path, else ../shared/buildkit/bin/buildkitd
#     beside the project): a standalone buildkitd with its own root, mutual TLS on a loopback
#     TCP port (certificates made here with openssl; the server name is not the address, as on
#     Depot's machines) and a plaintext unix socket
#   - on request (BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS=1 up; kept until down): Depot's registry name,
#     registry.depot.dev, as 127.0.0.1 in /etc/hosts, and plain HTTP to it in buildkitd's config.
#     Handed a build by DEPOT_BUILD_ID, `depot build --save` pushes there whatever the Depot API;
#     a local Depot serving that name on port 80 (`buildkit-node local-depot
#     --depot-registry-port 80`) then takes the save.
#
# Usage: scripts/local-buildkit.sh up|down|status|env
# Needs root for up, down and status. Machines without systemd are the target, so the daemons
# are started detached with setsid/nohup and tracked by pid files in /run/buildkit-node.
set -euo pipefail

readonly STATE_DIR=/var/lib/buildkit-node
readonly CONF_DIR=/etc/buildkit-node
readonly RUN_DIR=/run/buildkit-node
readonly LOG_DIR=${BUILDKIT_NODE_LOG_DIR:-/var/log/buildkit-node}

readonly DOCKER_SOCK=/var/run/docker.sock
readonly DOCKER_PIDFILE=/var/run/docker.pid
readonly CONTAINERD_PIDFILE=/var/run/docker/containerd/containerd.pid
# /usr/local/bin/docker on these machines is a CLI 28 without buildx: always use Debian's.
readonly DOCKER=(/usr/bin/docker --host "unix://$DOCKER_SOCK")

readonly PLAIN_PORT=5000
readonly AUTH_PORT=5001
readonly AUTH_USER=testuser
readonly AUTH_PASSWORD=testpassword
readonly AUTH_REALM=buildkit-node
readonly HTPASSWD_FILE=$CONF_DIR/htpasswd
readonly BASE_IMAGE_REPO=busybox:latest

# The daemons and what this script runs, then the tools the tests run that a minimal Debian lacks:
# ssh-agent/ssh-keygen/ssh-add (SSH forwarding), ps (the leak tests' child processes), git (git
# archive contexts; CI's src/gen check). openssl is both; script (bsdutils) and tar are essential.
readonly PACKAGES=(docker.io docker-registry busybox-static apache2-utils curl ca-certificates openssl runc iproute2
  openssh-client procps git)

# The standalone buildkitd (optional: only when a binary is at hand).
readonly SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly BUILDKITD_BIN=${BUILDKITD:-$SCRIPT_DIR/../../shared/buildkit/bin/buildkitd}
readonly BUILDKITD_PORT=${BUILDKITD_PORT:-1234}
readonly BUILDKITD_ADDRESS=tcp://127.0.0.1:$BUILDKITD_PORT
readonly BUILDKITD_SOCKET=$RUN_DIR/buildkitd.sock
readonly BUILDKITD_ROOT=$STATE_DIR/buildkitd
readonly BUILDKITD_CONFIG=$CONF_DIR/buildkitd.toml
readonly BUILDKITD_TLS_DIR=$CONF_DIR/buildkitd-tls
readonly BUILDKITD_SERVER_NAME=buildkitd.local-buildkit.test

# Depot's registry as this machine's own (optional, see the top).
readonly DEPOT_REGISTRY_HOST=registry.depot.dev
# (BUILDKIT_NODE_HOSTS_FILE: a copy to edit instead, for the tests of these edits.)
readonly HOSTS_FILE=${BUILDKIT_NODE_HOSTS_FILE:-/etc/hosts}
readonly HOSTS_ALIAS_LINE="127.0.0.1 $DEPOT_REGISTRY_HOST # buildkit-node: Depot registry alias (local-buildkit.sh down removes it)"

log() { printf 'local-buildkit: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Temporary things created along the way, removed on any exit.
TMP_DIR=""
POLICY_RC_CREATED=""
cleanup() {
  [ -z "$TMP_DIR" ] || rm -rf "$TMP_DIR"
  [ -z "$POLICY_RC_CREATED" ] || rm -f /usr/sbin/policy-rc.d
}
trap cleanup EXIT

require_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons); try: sudo $0 $*"
}

# --- health checks -----------------------------------------------------------------------------

# curl for loopback only: never through a proxy, never hanging.
local_curl() { curl -fsS --noproxy '*' --max-time 5 "$@"; }

dockerd_up() { [ "$(local_curl --unix-socket "$DOCKER_SOCK" http://docker/_ping 2>/dev/null)" = OK ]; }

plain_registry_up() { local_curl -o /dev/null "http://127.0.0.1:$PLAIN_PORT/v2/" 2>/dev/null; }

# Up means: answers with the credentials, and refuses (401) without them.
auth_registry_up() {
  local_curl -o /dev/null -u "$AUTH_USER:$AUTH_PASSWORD" "http://127.0.0.1:$AUTH_PORT/v2/" 2>/dev/null &&
    [ "$(curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$AUTH_PORT/v2/" 2>/dev/null)" = 401 ]
}

have_buildkitd() { [ -x "$BUILDKITD_BIN" ]; }

# Up means: answers ListWorkers over mutual TLS with our client certificate, and on its socket.
buildkitd_up() {
  local buildctl
  buildctl=$(dirname "$BUILDKITD_BIN")/buildctl
  [ -S "$BUILDKITD_SOCKET" ] || return 1
  if [ -x "$buildctl" ]; then
    timeout 5 "$buildctl" --addr "$BUILDKITD_ADDRESS" --tlsservername "$BUILDKITD_SERVER_NAME" \
      --tlscacert "$BUILDKITD_TLS_DIR/ca.pem" --tlscert "$BUILDKITD_TLS_DIR/client.pem" \
      --tlskey "$BUILDKITD_TLS_DIR/client-key.pem" debug workers >/dev/null 2>&1
  else
    # No buildctl beside it: a TLS handshake with our client certificate must succeed.
    timeout 5 openssl s_client -connect "127.0.0.1:$BUILDKITD_PORT" -servername "$BUILDKITD_SERVER_NAME" \
      -CAfile "$BUILDKITD_TLS_DIR/ca.pem" -cert "$BUILDKITD_TLS_DIR/client.pem" -key "$BUILDKITD_TLS_DIR/client-key.pem" \
      -alpn h2 -verify_return_error -brief </dev/null >/dev/null 2>&1
  fi
}

dockerd_has_busybox() { "${DOCKER[@]}" image inspect "127.0.0.1:$PLAIN_PORT/$BASE_IMAGE_REPO" >/dev/null 2>&1; }

depot_alias_in_hosts() { grep -qxF "$HOSTS_ALIAS_LINE" "$HOSTS_FILE" 2>/dev/null; }

# Wanted when asked for now, or when an earlier up set it up (down takes it away).
depot_alias_wanted() { [ "${BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS:-}" = 1 ] || depot_alias_in_hosts; }

# The name resolves to 127.0.0.1 first (another line of /etc/hosts could say otherwise).
depot_alias_resolves() { [ "$(getent ahostsv4 "$DEPOT_REGISTRY_HOST" 2>/dev/null | awk '{print $1; exit}')" = 127.0.0.1 ]; }

# buildkitd's config (written only when it starts, so what it runs with) speaks plain HTTP to it.
buildkitd_has_depot_alias() { grep -qxF "[registry.\"$DEPOT_REGISTRY_HOST\"]" "$BUILDKITD_CONFIG" 2>/dev/null; }

registry_up() { # registry_up <port>
  if [ "$1" = "$AUTH_PORT" ]; then auth_registry_up; else plain_registry_up; fi
}

registry_has_busybox() { # registry_has_busybox <port>
  local auth=()
  [ "$1" != "$AUTH_PORT" ] || auth=(-u "$AUTH_USER:$AUTH_PASSWORD")
  # (No pipe into grep -q: with pipefail an early grep exit could fail the check.)
  [[ $(local_curl "${auth[@]}" "http://127.0.0.1:$1/v2/busybox/tags/list" 2>/dev/null) == *'"latest"'* ]]
}

# --- process helpers ---------------------------------------------------------------------------

# Alive and not a zombie (pid 1 on these machines may not reap what we detach).
pid_alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

pid_is() { # pid_is <pid> <comm>
  [ -n "$1" ] && pid_alive "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

pid_from_file() { # pid_from_file <file> <comm>: prints the pid if the file names a live <comm>
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  pid_is "$pid" "$2" && echo "$pid"
}

pid_listening_on() { # pid_listening_on <port>: prints nothing (and succeeds) when nobody listens
  ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1 || true
}

# wait_up <pid> <seconds> <check...>: poll the check until it passes, the process dies, or time runs out.
wait_up() {
  local pid=$1 tries=$(($2 * 10))
  shift 2
  for _ in $(seq 1 "$tries"); do
    "$@" && return 0
    pid_alive "$pid" || return 1
    sleep 0.1
  done
  return 1
}

fail_with_log() { # fail_with_log <name> <what happened>
  log "$2; last lines of $LOG_DIR/$1.log:"
  tail -n 30 "$LOG_DIR/$1.log" >&2 || true
  exit 1
}

# start_daemon <name> <command...>: detached from this shell, output to $LOG_DIR/<name>.log.
# Sets STARTED_PID. (Without job control the background job is no group leader, so setsid
# and nohup exec in place and $! is the daemon itself.)
start_daemon() {
  local name=$1
  shift
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  printf '=== %s starting: %s\n' "$(date -Is)" "$*" >>"$LOG_DIR/$name.log"
  setsid nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  STARTED_PID=$!
  echo "$STARTED_PID" >"$RUN_DIR/$name.pid"
}

# stop_pid <pid> <seconds>: TERM, wait, then KILL.
stop_pid() {
  local pid=$1 tries=$(($2 * 10))
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 "$tries"); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid still running after $2 s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
}

# --- up ----------------------------------------------------------------------------------------

install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0

  log "installing ${missing[*]}"
  # The packages' init scripts would start a default dockerd and an all-interfaces registry
  # with Debian's config on :5000; block service starts during the install.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$POLICY_RC_CREATED" ]; then
    rm -f /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=""
  fi
}

write_htpasswd() {
  # Rewrite only if it does not already accept the test credentials.
  htpasswd -vb "$HTPASSWD_FILE" "$AUTH_USER" "$AUTH_PASSWORD" >/dev/null 2>&1 && return 0
  mkdir -p "$CONF_DIR"
  htpasswd -Bbn "$AUTH_USER" "$AUTH_PASSWORD" | sed '/^$/d' >"$HTPASSWD_FILE"
  chmod 600 "$HTPASSWD_FILE"
}

write_registry_config() { # write_registry_config <port> <file>
  local port=$1 file=$2 storage=$STATE_DIR/registry-$1
  mkdir -p "$CONF_DIR" "$storage"
  cat >"$file" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
  if [ "$port" = "$AUTH_PORT" ]; then
    cat >>"$file" <<YML
auth:
  htpasswd:
    realm: $AUTH_REALM
    path: $HTPASSWD_FILE
YML
  fi
}

ensure_registry() { # ensure_registry <port>
  local port=$1 name=registry-$1 config=$CONF_DIR/registry-$1.yml
  registry_up "$port" && return 0
  # Distribution's htpasswd auth invents a random password if the file is missing: write it first.
  [ "$port" != "$AUTH_PORT" ] || write_htpasswd
  write_registry_config "$port" "$config"
  start_daemon "$name" /usr/bin/docker-registry serve "$config"
  wait_up "$STARTED_PID" 15 registry_up "$port" ||
    fail_with_log "$name" "registry on 127.0.0.1:$port did not come up"
}

# dockerd refuses to start over a pid file naming a live process, whatever that process is.
remove_stale_pid_files() {
  local file comm
  for file in "$DOCKER_PIDFILE:dockerd" "$CONTAINERD_PIDFILE:containerd"; do
    comm=${file##*:}
    file=${file%:*}
    [ -f "$file" ] && ! pid_from_file "$file" "$comm" >/dev/null && rm -f "$file"
  done
  return 0
}

ensure_dockerd() {
  dockerd_up && return 0
  remove_stale_pid_files
  # No iptables in these containers and no IP forwarding wanted; a bridge subnet unlikely to
  # collide with the host's; API on the unix socket only.
  start_daemon dockerd /usr/sbin/dockerd \
    --host "unix://$DOCKER_SOCK" \
    --data-root /var/lib/docker \
    --storage-driver overlay2 \
    --iptables=false --ip6tables=false --ip-forward=false \
    --bip 172.31.254.1/24
  wait_up "$STARTED_PID" 60 dockerd_up || fail_with_log dockerd "dockerd did not come up"
}

# A minimal busybox image, imported into dockerd as 127.0.0.1:5000/busybox:latest.
import_busybox_image() {
  local image=127.0.0.1:$PLAIN_PORT/$BASE_IMAGE_REPO rootfs=$TMP_DIR/rootfs
  "${DOCKER[@]}" image inspect "$image" >/dev/null 2>&1 && return 0
  log "building $image from busybox-static"
  mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root}
  cp /bin/busybox "$rootfs/bin/busybox"
  # In a chroot the applet symlinks point at /bin/busybox inside the image.
  chroot "$rootfs" /bin/busybox --install -s /bin
  chmod 1777 "$rootfs/tmp"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  tar -C "$rootfs" --numeric-owner -cf "$TMP_DIR/rootfs.tar" .
  "${DOCKER[@]}" import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$TMP_DIR/rootfs.tar" "$image" >/dev/null
}

push_busybox() { # push_busybox <port>
  local image=127.0.0.1:$1/$BASE_IMAGE_REPO out
  "${DOCKER[@]}" tag "127.0.0.1:$PLAIN_PORT/$BASE_IMAGE_REPO" "$image"
  if [ "$1" = "$AUTH_PORT" ]; then
    printf '%s' "$AUTH_PASSWORD" |
      "${DOCKER[@]}" login -u "$AUTH_USER" --password-stdin "127.0.0.1:$1" >/dev/null 2>&1 ||
      die "docker login to 127.0.0.1:$1 failed"
  fi
  out=$("${DOCKER[@]}" push "$image" 2>&1) || { printf '%s\n' "$out" >&2; die "pushing $image failed"; }
  log "pushed $image"
}

ensure_busybox() {
  local port missing=()
  for port in "$PLAIN_PORT" "$AUTH_PORT"; do
    registry_has_busybox "$port" || missing+=("$port")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    # dockerd keeps its own copy too (tests tag it); a pruned store gets it back from the registry.
    dockerd_has_busybox || "${DOCKER[@]}" pull -q "127.0.0.1:$PLAIN_PORT/$BASE_IMAGE_REPO" >/dev/null
    return 0
  fi

  TMP_DIR=$(mktemp -d)
  # Credentials from docker login go to this throw-away config, never to ~/.docker.
  export DOCKER_CONFIG=$TMP_DIR/docker-config
  mkdir -p "$DOCKER_CONFIG"
  import_busybox_image
  for port in "${missing[@]}"; do push_busybox "$port"; done
  rm -rf "$TMP_DIR"
  TMP_DIR=""
  unset DOCKER_CONFIG
}

# issue_cert <name> <subject CN> <extensions>: a P-256 key and a certificate signed by our CA.
issue_cert() {
  local dir=$BUILDKITD_TLS_DIR name=$1 cn=$2 ext=$3
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$dir/$name-key.pem"
  openssl req -new -key "$dir/$name-key.pem" -subj "/CN=$cn" -out "$dir/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
    -days 365 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# A CA of our own, a server certificate for a name (not the address) and a client certificate.
# Kept while valid for another day, so the client files the tests read stay the same.
write_buildkitd_certificates() {
  local dir=$BUILDKITD_TLS_DIR f valid=1
  for f in ca.pem server.pem client.pem; do
    openssl x509 -checkend 86400 -noout -in "$dir/$f" >/dev/null 2>&1 || valid=0
  done
  [ "$valid" = 0 ] || return 0
  log "making buildkitd's TLS certificates in $dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  chmod 700 "$dir"
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$dir/ca-key.pem"
  openssl req -new -x509 -key "$dir/ca-key.pem" -subj "/CN=buildkit-node local CA" -days 365 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.pem" 2>/dev/null
  issue_cert server "$BUILDKITD_SERVER_NAME" "subjectAltName=DNS:$BUILDKITD_SERVER_NAME
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
  issue_cert client "buildkit-node tests" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
  rm -f "$dir/ca.srl"
}

buildkitd_config() {
  cat <<TOML
root = "$BUILDKITD_ROOT"
[grpc]
  address = ["$BUILDKITD_ADDRESS", "unix://$BUILDKITD_SOCKET"]
  [grpc.tls]
    cert = "$BUILDKITD_TLS_DIR/server.pem"
    key = "$BUILDKITD_TLS_DIR/server-key.pem"
    ca = "$BUILDKITD_TLS_DIR/ca.pem"
[worker.oci]
  enabled = true
  snapshotter = "overlayfs"
  networkMode = "host"
  # Benchmarks upload gigabytes under fresh keys: keep the cache bounded.
  gc = true
  maxUsedSpace = "10GB"
  minFreeSpace = "10GB"
[worker.containerd]
  enabled = false
[registry."127.0.0.1:$PLAIN_PORT"]
  http = true
[registry."127.0.0.1:$AUTH_PORT"]
  http = true
[registry."localhost:$PLAIN_PORT"]
  http = true
TOML
  if depot_alias_wanted; then
    cat <<TOML
# The depot CLI saves builds it picks up to this name: a local Depot on 127.0.0.1:80 takes them.
[registry."$DEPOT_REGISTRY_HOST"]
  http = true
TOML
  fi
}

# (Written in place: in a container /etc/hosts is often a bind mount, which cannot be replaced.)
add_depot_alias_to_hosts() {
  depot_alias_in_hosts && return 0
  # The last line may lack its newline.
  [ ! -s "$HOSTS_FILE" ] || [ -z "$(tail -c 1 "$HOSTS_FILE")" ] || echo >>"$HOSTS_FILE"
  printf '%s\n' "$HOSTS_ALIAS_LINE" >>"$HOSTS_FILE"
  log "added $DEPOT_REGISTRY_HOST as 127.0.0.1 to $HOSTS_FILE"
}

ensure_depot_alias() {
  add_depot_alias_to_hosts
  depot_alias_resolves || die "$DEPOT_REGISTRY_HOST does not resolve to 127.0.0.1 first: another line of $HOSTS_FILE names it"
}

# Every other line stays as it was, blank lines at the end included (a command substitution
# would drop those); a last line that lacked its newline before up keeps the one up gave it.
remove_depot_alias_from_hosts() {
  depot_alias_in_hosts || return 0
  local kept status=0
  kept=$(mktemp)
  grep -vxF "$HOSTS_ALIAS_LINE" "$HOSTS_FILE" >"$kept" || status=$?
  # grep says 1 when no line is left: the alias was the whole file.
  if [ "$status" -gt 1 ]; then
    rm -f "$kept"
    die "cannot read $HOSTS_FILE"
  fi
  cat "$kept" >"$HOSTS_FILE"
  rm -f "$kept"
  log "removed $DEPOT_REGISTRY_HOST from $HOSTS_FILE"
}

# A buildkitd we started that is slow to answer (a loaded machine, a long GC) is asked twice more
# before it is taken for dead and restarted under the builds of whoever is using it.
buildkitd_up_after_retries() {
  pid_from_file "$RUN_DIR/buildkitd.pid" buildkitd >/dev/null || return 1
  local attempt
  for attempt in 1 2; do
    sleep 2
    buildkitd_up && return 0
  done
  return 1
}

ensure_buildkitd() {
  if ! have_buildkitd; then
    log "no buildkitd binary at $BUILDKITD_BIN (set BUILDKITD=path): skipping the standalone buildkitd;" \
      "tests that need it will say they are skipped"
    return 0
  fi
  write_buildkitd_certificates
  local config pid
  config=$(buildkitd_config)
  if buildkitd_up || buildkitd_up_after_retries; then
    [ "$config" != "$(cat "$BUILDKITD_CONFIG" 2>/dev/null)" ] || return 0
    if ! pid=$(pid_from_file "$RUN_DIR/buildkitd.pid" buildkitd); then
      log "warning: buildkitd's configuration changed, but the buildkitd answering was not started here: left as it is"
      return 0
    fi
    log "buildkitd's configuration changed (e.g. the Depot registry alias): restarting it (pid $pid)"
    stop_pid "$pid" 20
  elif pid=$(pid_from_file "$RUN_DIR/buildkitd.pid" buildkitd); then
    log "buildkitd (pid $pid) does not answer; restarting it"
    stop_pid "$pid" 20
  fi
  mkdir -p "$CONF_DIR" "$BUILDKITD_ROOT" "$RUN_DIR"
  printf '%s\n' "$config" >"$BUILDKITD_CONFIG"
  rm -f "$BUILDKITD_SOCKET"
  start_daemon buildkitd "$BUILDKITD_BIN" --config "$BUILDKITD_CONFIG"
  wait_up "$STARTED_PID" 60 buildkitd_up || fail_with_log buildkitd "buildkitd did not come up"
  log "buildkitd $("$BUILDKITD_BIN" --version | awk '{print $3}') up on $BUILDKITD_ADDRESS (mTLS, server name $BUILDKITD_SERVER_NAME) and unix://$BUILDKITD_SOCKET"
}

cmd_up() {
  install_packages
  ensure_registry "$PLAIN_PORT"
  ensure_registry "$AUTH_PORT"
  ensure_dockerd
  ensure_busybox
  [ "${BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS:-}" != 1 ] || ensure_depot_alias
  ensure_buildkitd
  echo "local BuildKit up: dockerd unix://$DOCKER_SOCK (docker://), registry 127.0.0.1:$PLAIN_PORT," \
    "auth registry 127.0.0.1:$AUTH_PORT ($AUTH_USER), base image 127.0.0.1:$PLAIN_PORT/$BASE_IMAGE_REPO"
  if have_buildkitd; then
    echo "standalone buildkitd: $BUILDKITD_ADDRESS (mTLS) and unix://$BUILDKITD_SOCKET; eval \"\$($0 env)\" to test against it"
  fi
  if depot_alias_in_hosts; then
    echo "Depot registry alias: $DEPOT_REGISTRY_HOST is 127.0.0.1, plain HTTP for buildkitd (down removes it)"
  fi
}

# --- status ------------------------------------------------------------------------------------

report() { # report <label> <check...>: prints up/down, returns the check's result
  local label=$1
  shift
  if "$@"; then
    printf '%-40s up\n' "$label"
  else
    printf '%-40s down\n' "$label"
    return 1
  fi
}

cmd_status() {
  local ok=0
  report "dockerd (unix://$DOCKER_SOCK)" dockerd_up || ok=1
  report "registry 127.0.0.1:$PLAIN_PORT" plain_registry_up || ok=1
  report "registry 127.0.0.1:$AUTH_PORT (htpasswd)" auth_registry_up || ok=1
  report "busybox in 127.0.0.1:$PLAIN_PORT" registry_has_busybox "$PLAIN_PORT" || ok=1
  report "busybox in 127.0.0.1:$AUTH_PORT" registry_has_busybox "$AUTH_PORT" || ok=1
  report "busybox in dockerd's image store" dockerd_has_busybox || ok=1
  if have_buildkitd; then
    report "buildkitd ($BUILDKITD_ADDRESS, mTLS)" buildkitd_up || ok=1
  else
    printf '%-40s skipped (no binary at %s)\n' "buildkitd" "$BUILDKITD_BIN"
  fi
  if depot_alias_in_hosts; then
    report "$DEPOT_REGISTRY_HOST is 127.0.0.1" depot_alias_resolves || ok=1
    if have_buildkitd; then report "buildkitd: $DEPOT_REGISTRY_HOST plain HTTP" buildkitd_has_depot_alias || ok=1; fi
  else
    printf '%-40s off (BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS=1 up)\n' "Depot registry alias"
  fi
  return "$ok"
}

# --- down --------------------------------------------------------------------------------------

stop_registry() { # stop_registry <port>: by our pid file, else whatever docker-registry holds the port
  local name=registry-$1 pid
  pid=$(pid_from_file "$RUN_DIR/$name.pid" docker-registry) || pid=$(pid_listening_on "$1")
  if pid_is "$pid" docker-registry; then
    log "stopping $name (pid $pid)"
    stop_pid "$pid" 10
  fi
  rm -f "$RUN_DIR/$name.pid"
}

stop_dockerd() {
  local pid
  pid=$(pid_from_file "$RUN_DIR/dockerd.pid" dockerd) || pid=$(pid_from_file "$DOCKER_PIDFILE" dockerd) || pid=""
  if [ -n "$pid" ]; then
    log "stopping dockerd (pid $pid)"
    stop_pid "$pid" 20
  fi
  # dockerd stops its containerd on a clean exit, not after a KILL.
  if pid=$(pid_from_file "$CONTAINERD_PIDFILE" containerd); then
    log "stopping containerd left behind (pid $pid)"
    stop_pid "$pid" 10
  fi
  rm -f "$RUN_DIR/dockerd.pid"
  remove_stale_pid_files
}

stop_buildkitd() {
  local pid
  pid=$(pid_from_file "$RUN_DIR/buildkitd.pid" buildkitd) || pid=$(pid_listening_on "$BUILDKITD_PORT")
  if pid_is "$pid" buildkitd; then
    log "stopping buildkitd (pid $pid)"
    stop_pid "$pid" 20
  fi
  rm -f "$RUN_DIR/buildkitd.pid" "$BUILDKITD_SOCKET"
}

cmd_down() {
  stop_buildkitd
  stop_dockerd
  stop_registry "$AUTH_PORT"
  stop_registry "$PLAIN_PORT"
  remove_depot_alias_from_hosts
  echo "local BuildKit down"
}

# --- env ---------------------------------------------------------------------------------------

cmd_env() {
  cat <<ENV
export BUILDKIT_NODE_DOCKER_HOST=docker://$DOCKER_SOCK
export BUILDKIT_NODE_REGISTRY=127.0.0.1:$PLAIN_PORT
export BUILDKIT_NODE_AUTH_REGISTRY=127.0.0.1:$AUTH_PORT
export BUILDKIT_NODE_AUTH_REGISTRY_USERNAME=$AUTH_USER
export BUILDKIT_NODE_AUTH_REGISTRY_PASSWORD=$AUTH_PASSWORD
export BUILDKIT_NODE_BASE_IMAGE=127.0.0.1:$PLAIN_PORT/$BASE_IMAGE_REPO
ENV
  if have_buildkitd && [ -f "$BUILDKITD_TLS_DIR/client.pem" ]; then
    cat <<ENV
export BUILDKIT_HOST=$BUILDKITD_ADDRESS
export BUILDKIT_TLS_CA=$BUILDKITD_TLS_DIR/ca.pem
export BUILDKIT_TLS_CERT=$BUILDKITD_TLS_DIR/client.pem
export BUILDKIT_TLS_KEY=$BUILDKITD_TLS_DIR/client-key.pem
export BUILDKIT_TLS_SERVER_NAME=$BUILDKITD_SERVER_NAME
export BUILDKIT_NODE_BUILDKITD_SOCKET=unix://$BUILDKITD_SOCKET
ENV
  else
    echo "# no standalone buildkitd (no binary at $BUILDKITD_BIN, or not set up yet): BUILDKIT_HOST left unset"
  fi
  if depot_alias_in_hosts && buildkitd_has_depot_alias; then
    echo "export BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS=1"
  else
    echo "# no Depot registry alias ($DEPOT_REGISTRY_HOST as 127.0.0.1 for buildkitd): BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS=1 $0 up sets it up"
  fi
}

usage() {
  echo "usage: $0 up|down|status|env" >&2
  exit 2
}

main() {
  [ $# -eq 1 ] || usage
  case $1 in
    up) require_root "$@"; cmd_up ;;
    down) require_root "$@"; cmd_down ;;
    status) require_root "$@"; cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
  esac
}

# Sourced (the tests of the /etc/hosts edits call its functions), it only defines them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
