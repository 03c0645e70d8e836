"""The committed gRPC stubs are what scripts/gen_proto.py makes from proto/ today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_fresh():
    """Regenerating the stubs changes nothing (else: run `python scripts/gen_proto.py`)."""
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    gen_proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_proto)
    generated = gen_proto.generate()
    committed = {p.name: p.read_text() for p in gen_proto.OUTPUT.glob("*_pb2*.py*")}
    assert set(generated) == set(committed), "stub files differ; run python scripts/gen_proto.py"
    stale = sorted(name for name, text in generated.items() if committed[name] != text)
    assert not stale, f"stale stubs {stale}; run python scripts/gen_proto.py"
