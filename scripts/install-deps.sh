#!/usr/bin/env bash
# Install the servers the test suite runs (tests/servers.py starts them on
# free ports of 127.0.0.1; this script never starts them).
#
# Idempotent: when everything is present it only checks and exits. Otherwise
# it runs `apt-get update` once and installs what is missing, with the
# Debian services prevented from starting (they would take the standard
# ports): a policy-rc.d that denies every start is put in place for the
# install and removed afterwards (an existing one is left as it is).
#
# Needs root (or sudo) and Debian/Ubuntu apt. Python packages are not
# installed here: `pip install -e '.[all,dev]'` does that.
set -euo pipefail

# One line per need: "<what must exist: a command or an absolute path> <apt packages...>".
NEEDS=(
  "redis-server redis-server"
  "etcd etcd-server"
  "etcdctl etcd-client"
  "java default-jre-headless"
  # ZooKeeper's jars only: the `zookeeper` package adds a system service
  # and a desktop JRE that the tests do not need.
  "/usr/share/java/zookeeper.jar libzookeeper-java"
  "/usr/share/java/slf4j-simple.jar libslf4j-java"
  # Any major version of PostgreSQL's server (Debian keeps each under its own bin/).
  "/usr/lib/postgresql/*/bin/postgres postgresql"
  "mariadbd mariadb-server"
  "mariadb mariadb-client"
  # A three-node Galera cluster of MariaDB (tests/test_clusters.py); rsync moves state to a joiner.
  "/usr/lib/galera/libgalera_smm.so galera-4"
  "rsync rsync"
  "memcached memcached"
)

die() { echo "install-deps: error: $*" >&2; exit 1; }

present() {
  if [[ $1 == /* ]]; then compgen -G "$1" >/dev/null; else command -v "$1" >/dev/null 2>&1; fi
}

missing=()
for need in "${NEEDS[@]}"; do
  read -r -a fields <<<"$need"
  present "${fields[0]}" || missing+=("${fields[@]:1}")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all test servers present"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null 2>&1 || die "run as root (or install sudo) to install: ${missing[*]}"
  SUDO=(sudo)
fi

POLICY=/usr/sbin/policy-rc.d
if [[ ! -e $POLICY ]]; then
  printf '#!/bin/sh\n# installed by moot scripts/install-deps.sh for the install only\nexit 101\n' |
    "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
  trap 'exit 130' INT TERM
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" || die "apt-get install ${missing[*]} failed"

for need in "${NEEDS[@]}"; do
  read -r -a fields <<<"$need"
  present "${fields[0]}" || die "${fields[0]} still missing after installing ${fields[*]:1}"
done
echo "install-deps: done"
