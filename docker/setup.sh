#!/usr/bin/env bash
# Makes what docker/compose.yaml mounts, once, as root (the secret files
# must belong to the container users that read them):
#   - docker/secrets/postgres_password   PostgreSQL's superuser password,
#                                        also pgveil's [maintenance] login
#   - docker/secrets/master.key          pgveil's master key
#   - docker/secrets/ca.crt, pgveil.crt, pgveil.key
#                                        a CA and pgveil's TLS certificate
#                                        for localhost and pgveil
#   - the keyring, in the pgveil-data volume (pgveil keys init)
# Keep a copy of master.key and of the keyring somewhere safe: without
# them the protected columns cannot be read, ever (docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "run as root: the secrets are chowned to the container users" >&2; exit 1; }
command -v openssl >/dev/null || { echo "setup.sh needs openssl" >&2; exit 1; }
PGVEIL_UID=10001   # the pgveil user of docker/Dockerfile
umask 077
mkdir -p secrets
cd secrets
[ -e postgres_password ] || openssl rand -base64 24 | tr -d '\n' > postgres_password
[ -e master.key ] || openssl rand -base64 32 > master.key
if [ ! -e pgveil.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=pgveil compose CA" -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=localhost" -keyout pgveil.key -out pgveil.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,DNS:pgveil,IP:127.0.0.1\n' > san.ext
  openssl x509 -req -in pgveil.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 825 -extfile san.ext -out pgveil.crt 2>/dev/null
  rm -f pgveil.csr san.ext ca.srl
  chmod 644 ca.crt pgveil.crt
fi
# The password file is read by both containers: PostgreSQL's entrypoint
# reads it as root before dropping privileges; pgveil needs to own it.
chown "$PGVEIL_UID:$PGVEIL_UID" master.key pgveil.key postgres_password
chmod 600 master.key pgveil.key postgres_password
cd ..
docker compose -f compose.yaml build pgveil
docker compose -f compose.yaml run --rm --no-deps --entrypoint pgveil pgveil \
  keys init --policy /etc/pgveil/policies/crm.toml \
  --keyring /var/lib/pgveil/keyring.toml --master-key-file /run/secrets/pgveil_master_key
echo "ready: docker compose -f docker/compose.yaml up -d"
