#!/usr/bin/env bash
# Build the node image with podman and run a node inside it, on a machine that reaches no image
# registry: the base is a Debian bookworm rootfs with python3.11 made by mmdebstrap from Debian's
# packages, passed as PYTHON_IMAGE (the Dockerfile's default is python:3.11-slim).
#
#   sudo apt-get install -y podman mmdebstrap    # once
#   scripts/image_smoke_test.sh
#
# The smoke stage runs as the image's user (uid 10001) with its environment: it starts
# `stateserver serve`, waits for the HEALTHCHECK's command to pass, writes, checkpoints, reads
# back through the client library, sends SIGTERM and expects exit 0. RUN steps are the only
# way to execute the image here: `podman run` needs setrlimit, which this sandbox refuses.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base=localhost/stateserver-base:bookworm-python3.11
port=${SMOKE_PORT:-17731}

if ! podman image exists "$base"; then
    mmdebstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$work/rootfs.tar" http://deb.debian.org/debian
    podman import "$work/rootfs.tar" "$base.raw"
    # The host's CA bundle: where PyPI is reached through a TLS-inspecting proxy, pip needs it.
    cp /etc/ssl/certs/ca-certificates.crt "$work/"
    printf 'FROM %s\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\nENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' \
        "$base.raw" > "$work/Containerfile.base"
    podman build --isolation=chroot -f "$work/Containerfile.base" -t "$base" "$work"
fi

podman build --isolation=chroot --format docker --build-arg PYTHON_IMAGE="$base" -t localhost/stateserver:smoke .

cat > "$work/Containerfile.smoke" <<EOF
FROM localhost/stateserver:smoke
RUN set -e; id; \\
    stateserver serve --host 127.0.0.1 --port $port --metrics-host 127.0.0.1 --metrics-port 0 & pid=\$!; \\
    for i in \$(seq 150); do STATESERVER_PORT=$port /bin/sh -c 'stateserver health --address "127.0.0.1:\${STATESERVER_PORT:-7700}"' && break; sleep 0.2; done; \\
    python -c "from stateserver.client import StateClient, BYTES; \\
c = StateClient('127.0.0.1:$port'); c.create_namespace('smoke', max_key_groups=8); \\
w = c.open_writer('smoke', key_groups='0-7', epoch=1); s = w.value_state('v', value_serializer=BYTES); \\
s.put('k', b'hello'); w.snapshot(1); c.commit_checkpoint('smoke', 1, w.await_snapshot(1), [w]); \\
assert s.get('k') == b'hello'; print('smoke: read back and checkpointed')"; \\
    kill -TERM \$pid; wait \$pid; echo "smoke: node exited \$?"; \\
    stateserver verify --snapshot-url file:///data/snapshots --namespace smoke --checkpoint latest --checksums
EOF
podman build --isolation=chroot --no-cache -f "$work/Containerfile.smoke" -t localhost/stateserver:smoke-run "$work"
podman image inspect localhost/stateserver:smoke \
    --format 'user={{.Config.User}} ports={{.Config.ExposedPorts}} volumes={{.Config.Volumes}} healthcheck={{.Config.Healthcheck.Test}} size={{.Size}}'
podman rmi localhost/stateserver:smoke-run >/dev/null
