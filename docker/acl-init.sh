#!/bin/sh
# One-shot ACL set-up for docker/compose.yaml: creates the policies and tokens of docker/acl.yaml with the
# bootstrap token. Every secret stays in $ACL_OUTPUT (a volume only this container mounts); each token named
# in $TOKEN_OWNERS ("name=uid ...") is written alone to $TOKENS_ROOT/<name>/<name>.token, owned by that uid
# with mode 0400: each of those folders is a volume that only the one container running as that uid mounts.
set -eu
: "${CONSUL_HTTP_TOKEN_FILE:?the bootstrap token file}"
: "${TOKEN_OWNERS:?name=uid pairs: which container uid may read which token}"
ACL_OUTPUT="${ACL_OUTPUT:-/acl/tokens.json}"
TOKENS_ROOT="${TOKENS_ROOT:-/tokens}"
umask 077
consul-agents acl setup /app/docker/acl.yaml --output "$ACL_OUTPUT"
ACL_OUTPUT="$ACL_OUTPUT" TOKENS_ROOT="$TOKENS_ROOT" python3 - <<'PY'
import json
import os
import tempfile
from pathlib import Path

tokens = json.loads(Path(os.environ["ACL_OUTPUT"]).read_text())
root = Path(os.environ["TOKENS_ROOT"])
for pair in os.environ["TOKEN_OWNERS"].split():
    name, _, uid = pair.partition("=")
    if name not in tokens or not uid.isdigit():
        raise SystemExit(f"TOKEN_OWNERS: {pair!r} names no token of acl.yaml or no numeric uid")
    folder = root / name
    folder.mkdir(mode=0o755, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".token.")
    with os.fdopen(fd, "w") as handle:
        handle.write(tokens[name]["secret_id"])
    os.chown(temporary, int(uid), int(uid))
    os.chmod(temporary, 0o400)
    os.replace(temporary, folder / f"{name}.token")
print("tokens handed out:", ", ".join(pair.split("=")[0] for pair in os.environ["TOKEN_OWNERS"].split()))
PY
