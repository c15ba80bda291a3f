#!/usr/bin/env bash
# Make sure RabbitMQ and PostgreSQL run on this machine (install them with apt-get if missing),
# with the RabbitMQ plugins roac's operations use. Safe to run again and again.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name seconds
  for _ in $(seq 1 "$3"); do port_open "$1" && return 0; sleep 1; done
  echo "ensure-services: $2 did not open port $1 within $3s" >&2; return 1
}

# PostgreSQL
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  echo "ensure-services: installing PostgreSQL"
  apt_install postgresql
fi
if ! port_open 5432; then
  echo "ensure-services: starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 5432 PostgreSQL 60
fi
# roac connects as postgres over TCP without a password, as on the development machines.
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  echo "ensure-services: PostgreSQL on 127.0.0.1:5432 refuses user postgres without a password;" >&2
  echo "  allow it (trust for 127.0.0.1/32 in pg_hba.conf) or set ROAC_DATABASE_URL" >&2
  exit 1
fi

# RabbitMQ
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "ensure-services: installing RabbitMQ"
  apt_install rabbitmq-server
fi
if ! port_open 5672; then
  echo "ensure-services: starting RabbitMQ"
  as_root rabbitmq-server -detached
  wait_port 5672 RabbitMQ 120
fi
as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
# Queue depth and consumer metrics for Prometheus (port 15692); the consistent-hash exchange
# partitions a stateful consumer's queue by key.
for plugin in rabbitmq_prometheus rabbitmq_consistent_hash_exchange; do
  if ! as_root rabbitmq-plugins list -e -m 2>/dev/null | grep -qx "$plugin"; then
    echo "ensure-services: enabling $plugin"
    as_root rabbitmq-plugins enable --quiet "$plugin" >/dev/null
  fi
done

# Tools the test suite calls: docker-compose validates docker-compose.yml; promtool and
# prometheus (Debian's prometheus package) check metrics and rules and scrape the live stack.
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "ensure-services: installing docker-compose (used to validate docker-compose.yml)"
  apt_install docker-compose
fi
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "ensure-services: installing prometheus (promtool and a server for the tests)"
  apt_install prometheus
fi
echo "ensure-services: PostgreSQL and RabbitMQ are up"
