"""Regenerate the Python gRPC stubs from proto/ into sdk/logd_sdk/protocol/.

The stubs are committed (so the one install command needs no code generation step);
tests/server/test_proto_stubs.py fails when they are stale. Run after editing proto/:

    python scripts/gen_proto.py
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUTPUT = ROOT / "sdk" / "logd_sdk" / "protocol"
PACKAGE = "logd_sdk.protocol"


def generate() -> dict[str, str]:
    """Return {file name: content} of the stubs as protoc makes them today."""
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "logd" / "v1").glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *sources]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        files = {}
        for path in sorted((Path(tmp) / "logd" / "v1").iterdir()):
            # protoc writes imports as the proto path (logd.v1), which would collide with
            # the broker's own `logd` package: point them at the SDK's protocol package.
            text = re.sub(r"^from logd\.v1 import", f"from {PACKAGE} import", path.read_text(), flags=re.M)
            files[path.name] = text
        return files


def main() -> None:
    files = generate()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for stale in OUTPUT.glob("*_pb2*.py*"):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (OUTPUT / name).write_text(text)
    init = OUTPUT / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC stubs for logd.v1 (see scripts/gen_proto.py); shared by broker and SDK."""\n')
    print(f"wrote {len(files)} files to {OUTPUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
