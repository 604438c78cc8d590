#!/bin/bash
# deploy/userdata.sh: the bootstrap of every cloudworker instance, worker or Flower.
#
# On EC2, cloud-init runs the template's user data once, as root, at first boot:
# a header that writes the stack's settings (/etc/cloudworker/stack.env) and the
# systemd units (/etc/cloudworker/units/), then this script verbatim.
# `python -m deploy aws render` builds that user data from this file and
# deploy/systemd/*.service; a test fails when the template is not current.
#
# Steps, in this order (CLOUDWORKER_BOOT_STEPS picks some; default all):
#   os     Debian packages (python3-venv, python3-boto3, curl) and the service user
#   fetch  the project at the stack's version: CLOUDWORKER_SOURCE, the release that
#          `python -m deploy aws up` uploads to the stack's bucket (retried while
#          it is not there yet: a new stack's instances may boot before the upload)
#   venv   a virtual environment with the pinned requirements, then the project
#   units  the systemd units, and this node's settings (node.env: role, concurrency)
#   start  enable and start the units of this node's role: the instance's
#          CloudworkerRole tag (worker or flower), read from the metadata service;
#          a worker also runs the drain agent, Flower's instance the exporter
#
# Elsewhere, as an ordinary user (the tests do this):
#   CLOUDWORKER_BOOT_ROOT=DIR   install under DIR instead of /
#   CLOUDWORKER_BOOT_SKIP_OS=1  skip the steps that need root and systemd (os, start)
#   CLOUDWORKER_BOOT_SOURCE=X   a directory (a checkout) or an s3:// URL, not CLOUDWORKER_SOURCE
#   CLOUDWORKER_BOOT_ROLE=R     worker or flower, instead of the instance's tag
#   CLOUDWORKER_BOOT_PYTHON=P   the Python that fetches and makes the venv (python3)
set -euo pipefail
umask 022

boot_root=${CLOUDWORKER_BOOT_ROOT:-}
etc_dir=$boot_root/etc/cloudworker
opt_dir=$boot_root/opt/cloudworker
unit_dir=$boot_root/etc/systemd/system
python=${CLOUDWORKER_BOOT_PYTHON:-python3}
steps=${CLOUDWORKER_BOOT_STEPS:-os fetch venv units start}
role=${CLOUDWORKER_BOOT_ROLE:-}

log() { printf 'cloudworker-boot: %s\n' "$*" >&2; }

set -a
# shellcheck source=/dev/null
. "$etc_dir/stack.env"
set +a
source_url=${CLOUDWORKER_BOOT_SOURCE:-$CLOUDWORKER_SOURCE}
src_dir=$opt_dir/src/$CLOUDWORKER_VERSION

step_os() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends ca-certificates curl python3-venv python3-boto3
  if ! id -u cloudworker >/dev/null 2>&1; then
    useradd --system --home-dir /opt/cloudworker --no-create-home \
      --shell /usr/sbin/nologin cloudworker
  fi
}

# fetch_s3 URL FILE: download with boto3 and the instance profile, retrying for
# up to CLOUDWORKER_BOOT_FETCH_TIMEOUT seconds (default 20 minutes).
fetch_s3() {
  local deadline=$((SECONDS + ${CLOUDWORKER_BOOT_FETCH_TIMEOUT:-1200}))
  until "$python" - "$1" "$2" <<'PY'
import sys

import boto3

bucket, _, key = sys.argv[1].removeprefix("s3://").partition("/")
try:
    boto3.client("s3").download_file(bucket, key, sys.argv[2])
except Exception as exc:
    sys.exit(f"cloudworker-boot: cannot fetch {sys.argv[1]}: {type(exc).__name__}: {exc}")
PY
  do
    if ((SECONDS >= deadline)); then
      log "giving up on $1"
      return 1
    fi
    sleep 10
  done
}

step_fetch() {
  local new=$src_dir.new
  rm -rf "$new" "$new.tar.gz"
  mkdir -p "$new"
  case $source_url in
    s3://*)
      fetch_s3 "$source_url" "$new.tar.gz"
      tar -xzf "$new.tar.gz" -C "$new" --strip-components=1
      rm -f "$new.tar.gz"
      ;;
    /*)
      # A checkout: its files without the local state (venv, caches, git).
      tar -C "$source_url" --exclude=.git --exclude=.venv --exclude=.run \
        --exclude=__pycache__ --exclude='*.egg-info' --exclude=.mypy_cache \
        --exclude=.ruff_cache --exclude=.pytest_cache --exclude=.hypothesis \
        --exclude=./build --exclude=./bench/.work -cf - . | tar -C "$new" -xf -
      ;;
    *)
      log "unknown source: $source_url"
      return 1
      ;;
  esac
  rm -rf "$src_dir"
  mv "$new" "$src_dir"
}

step_venv() {
  # Built in place: a venv cannot be moved once made.
  rm -rf "$opt_dir/venv"
  "$python" -m venv "$opt_dir/venv"
  local pip=("$opt_dir/venv/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
  "${pip[@]}" install -r "$src_dir/requirements.txt"
  # Editable, as the Makefile installs it: the release directory is the code.
  "${pip[@]}" install --no-deps --editable "$src_dir"
}

# The role of this node: CLOUDWORKER_BOOT_ROLE, else the CloudworkerRole tag
# (IMDSv2; the launch template enables tags in the metadata), else worker.
resolve_role() {
  if [ -z "$role" ]; then
    local token
    token=$(curl -sf -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
      http://169.254.169.254/latest/api/token) || token=
    role=$(curl -sf -m 5 -H "X-aws-ec2-metadata-token: $token" \
      http://169.254.169.254/latest/meta-data/tags/instance/CloudworkerRole) || role=worker
  fi
  case $role in
    worker | flower) ;;
    *)
      log "unknown role: $role"
      return 1
      ;;
  esac
}

step_units() {
  resolve_role
  mkdir -p "$unit_dir"
  install -m 0644 "$etc_dir"/units/cloudworker-*.service "$unit_dir/"
  printf 'CLOUDWORKER_NODE_ROLE=%s\nCLOUDWORKER_CONCURRENCY=%s\n' "$role" "$(nproc)" \
    >"$etc_dir/node.env"
}

# The units role $1 starts (all are installed): a worker's drain agent lets
# scale-in wait for its tasks; the exporter runs beside Flower.
role_units() {
  case $1 in
    worker) echo cloudworker-worker.service cloudworker-drain.service ;;
    flower) echo cloudworker-flower.service cloudworker-exporter.service ;;
  esac
}

step_start() {
  resolve_role
  systemctl daemon-reload
  local units
  read -ra units <<<"$(role_units "$role")"
  systemctl enable --now "${units[@]}"
}

for step in $steps; do
  if [ "${CLOUDWORKER_BOOT_SKIP_OS:-0}" = 1 ] && { [ "$step" = os ] || [ "$step" = start ]; }; then
    log "skipping step $step"
    continue
  fi
  log "step $step"
  "step_$step"
done
log "done: version $CLOUDWORKER_VERSION"
