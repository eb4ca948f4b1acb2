#!/usr/bin/env bash
# Makes sure the services the test suite talks to are up: PostgreSQL on 127.0.0.1:5432 with a
# database `test` that the current user can reach without a password (trust auth), and a
# Docker engine on its local socket.
# Installs PostgreSQL from Debian's packages when it is missing.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

# The clients the end-to-end tests drive: OpenSSH's ssh/scp/sftp, rsync, git, curl, openssl,
# python3 (http.server inside workspaces), chromium with chromedriver (the dashboard); npm fetches
# xterm.js when the dashboard's assets are built.
missing=""
for tool in ssh:openssh-client scp:openssh-client sftp:openssh-client ssh-keygen:openssh-client \
            rsync:rsync git:git curl:curl openssl:openssl python3:python3 ssh-audit:ssh-audit \
            ssh-agent:openssh-client npm:npm chromium:chromium chromedriver:chromium-driver; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool##*:}"
done
# A loopback sshd plays the git host in the git-over-SSH test.
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
if [ -n "$missing" ]; then
  echo "ci-services: installing$missing (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $(echo $missing | tr ' ' '\n' | sort -u) >/dev/null
fi

# Docker: the docker provisioner's tests run workspaces as containers on a local engine, in
# an image built here from Debian's packages (debootstrap; no registry is needed).
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  echo "ci-services: installing docker.io debootstrap (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "ci-services: starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/outpost-ci-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null 2>&1 || { echo "ci-services: dockerd did not start (see /var/log/outpost-ci-dockerd.log)" >&2; exit 1; }
echo "ci-services: Docker $(docker version --format '{{.Server.Version}}') ready"

# Two SFTP client libraries that are not OpenSSH (the sftp interoperability test), for Debian's
# python3 (a pyenv python3 may come first on PATH; the test runs /usr/bin/python3).
if ! /usr/bin/python3 -c 'import paramiko, asyncssh' >/dev/null 2>&1; then
  echo "ci-services: installing python3-paramiko python3-asyncssh (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3-paramiko python3-asyncssh >/dev/null
fi

# ssh-audit 3.x (PyPI) knows OpenSSH's strict-kex marker, which bookworm's 2.5 does not.
if [ ! -d /opt/ssh-audit3/ssh_audit ]; then
  echo "ci-services: installing ssh-audit 3.3.0 into /opt/ssh-audit3 (PyPI)"
  python3 -m pip --version >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  }
  python3 -m pip install -q --target /opt/ssh-audit3 ssh-audit==3.3.0 2>/dev/null ||
    python3 -m pip install -q --break-system-packages --target /opt/ssh-audit3 ssh-audit==3.3.0
fi

# schemathesis (PyPI) fuzzes the API against its OpenAPI description (tests/it/openapi.rs).
ST_VERSION=4.32.5
if ! /opt/schemathesis/bin/schemathesis --version 2>/dev/null | grep -q "$ST_VERSION"; then
  echo "ci-services: installing schemathesis $ST_VERSION into /opt/schemathesis (PyPI)"
  python3 -m venv /opt/schemathesis 2>/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv /opt/schemathesis
  }
  /opt/schemathesis/bin/pip install -q "schemathesis==$ST_VERSION"
fi

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "ci-services: installing PostgreSQL (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

if ! pg_up; then
  echo "ci-services: starting PostgreSQL"
  for v in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  done
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "ci-services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

# The tests connect as postgres@127.0.0.1/test; make sure that works.
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
  echo "ci-services: preparing trust auth and the test database"
  hba=$(su postgres -c "psql -tAc 'show hba_file'" 2>/dev/null || true)
  if [ -n "$hba" ] && ! grep -q "outpost-ci" "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # outpost-ci' "$hba"
    su postgres -c "psql -c 'select pg_reload_conf()'" >/dev/null
  fi
  su postgres -c "createdb test" 2>/dev/null || true
fi
psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null
echo "ci-services: PostgreSQL ready at postgres://postgres@127.0.0.1:5432/test"
