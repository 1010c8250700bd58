#!/bin/sh
# Writes the secret files compose.yaml mounts at /run/secrets/. Run once, from anywhere.
# Existing files are kept: a new encryption key would make every stored stack secret unreadable.
set -eu
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
# The folder keeps other host users out; the files must stay world-readable because compose
# bind-mounts them as they are and the server runs as uid 10001, not as their owner.
chmod 0700 "$dir"

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

write() {
    if [ -e "$dir/$1" ]; then
        echo "keep    secrets/$1"
    else
        # No trailing newline: not every reader strips one.
        printf '%s' "$2" >"$dir/$1"
        chmod 0644 "$dir/$1"
        echo "created secrets/$1"
    fi
}

write postgres_password "$(random_hex 24)"
# Read back, so the URL matches a password that was kept from an earlier run.
write database_url "postgresql://procella:$(head -n1 "$dir/postgres_password")@postgres:5432/procella"
write encryption_key "$(random_hex 32)"
write admin_token "$(random_hex 32)"
write s3_access_key procella
write s3_secret_key "$(random_hex 24)"
write s3_credentials "$(printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s' \
    "$(head -n1 "$dir/s3_access_key")" "$(head -n1 "$dir/s3_secret_key")")"
