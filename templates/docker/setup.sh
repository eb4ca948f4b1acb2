#!/bin/sh
# Runs inside `docker build`: installs what a workspace needs (only what the base image lacks,
# so a base that has it all builds without a network), sets up the locale and the user.
set -eu
PACKAGES="bash ca-certificates curl git sudo locales procps openssh-client python3 less"
missing=""
for p in $PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $missing
  rm -rf /var/lib/apt/lists/*
fi
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
locale-gen >/dev/null
# The workspace user: Outpost runs the agent and every session as uid 1000, `dev`.
id dev >/dev/null 2>&1 || useradd --create-home --uid 1000 --shell /bin/bash dev
echo 'dev ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/dev
chmod 0440 /etc/sudoers.d/dev
