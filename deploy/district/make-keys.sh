#!/usr/bin/env bash
# A district's keys (docs/district.md): a CA, the SuperLink's TLS certificate, one SuperNode key per room.
#   bash deploy/district/make-keys.sh OUT_DIR SUPERLINK_HOST ROOM [ROOM ...]
# OUT_DIR/ca.crt goes to every room (it verifies the SuperLink); server.crt/server.key stay on the
# SuperLink's host; ROOM (private) goes to that room only, ROOM.pub is registered with the SuperLink:
#   flwr supernode register OUT_DIR/ROOM.pub district
# Keep ca.key offline. The certificate is valid for 825 days; the SuperLink's host name or address
# must be the one the SuperNodes dial.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 OUT_DIR SUPERLINK_HOST ROOM [ROOM ...]" >&2
  exit 2
fi
out=$1 host=$2
shift 2
mkdir -p "$out"
umask 077
if [[ $host =~ ^[0-9.]+$ ]]; then san="IP:$host,IP:127.0.0.1"; else san="DNS:$host,IP:127.0.0.1"; fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes -days 825 \
  -keyout "$out/ca.key" -out "$out/ca.crt" -subj "/CN=mcil district CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes \
  -keyout "$out/server.key" -out "$out/server.csr" -subj "/CN=$host" 2>/dev/null
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -out "$out/server.crt" -days 825 \
  -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
rm -f "$out/server.csr"
for room in "$@"; do
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "$room" -f "$out/$room"
done
chmod 0644 "$out/ca.crt" "$out"/*.pub
echo "wrote $out: ca.crt, server.crt, server.key and a key pair for: $*"
