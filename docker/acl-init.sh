#!/bin/sh
# One-shot ACL set-up for docker/compose.yaml: creates the policies and tokens of docker/acl.yaml with the
# bootstrap token, then writes each token's secret to /tokens/<name>.token for the containers that need it.
set -eu
: "${CONSUL_HTTP_TOKEN_FILE:?the bootstrap token file}"
consul-agents acl setup /app/docker/acl.yaml --output /tokens/tokens.json
python3 - <<'PY'
import json
import os
from pathlib import Path

tokens = json.loads(Path("/tokens/tokens.json").read_text())
for name, token in tokens.items():
    path = Path("/tokens") / f"{name}.token"
    path.write_text(token["secret_id"])
    os.chmod(path, 0o640)
print("tokens written:", ", ".join(sorted(tokens)))
PY
