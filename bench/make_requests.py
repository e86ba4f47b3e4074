#!/usr/bin/env python3
"""Writes the benchmark's signed requests and the tenants both servers use.

Usage: make_requests.py OUT_DIR [COUNT]

OUT_DIR/requests.tsv  one request a line: path<TAB>x-signature<TAB>body (1-4 KiB JSON bodies,
                      8 tenants, unique event ids, realistic AI/voice-agent payloads)
OUT_DIR/tenants.toml  [[tenants]] entries for hookstream (generic HMAC-SHA256, hex, sha256=)
OUT_DIR/tenants.json  the same secrets for the reference app
"""
import hashlib
import hmac
import json
import random
import sys
from pathlib import Path

out = Path(sys.argv[1])
count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(42)
tenants = {f"tenant{i}": f"bench-secret-{i}-{'k' * 24}" for i in range(8)}

toml = []
for tenant, secret in tenants.items():
    toml.append(f"""[[tenants]]
id = "{tenant}"
[[tenants.sources]]
id = "agent"
scheme = "hmac"
secrets = [{{ id = "k1", value = "{secret}" }}]
hmac = {{ header = "x-signature", prefix = "sha256=", encoding = "hex" }}
extract = {{ event_id = "/id", event_type = "/type", entity = "/call_id", occurred_at = "/occurred_at" }}
""")
(out / "tenants.toml").write_text("\n".join(toml))
(out / "tenants.json").write_text(json.dumps(tenants))

words = "the caller asked about the invoice and the agent transferred to billing after confirming identity".split()
with (out / "requests.tsv").open("w") as f:
    for n in range(count):
        tenant = rng.choice(list(tenants))
        size = rng.randint(1024, 4096)
        event = {
            "id": f"evt_{n:08d}",
            "type": rng.choice(["call.started", "call.transcript", "call.ended", "agent.reply"]),
            "call_id": f"call_{rng.randint(0, 499)}",
            "occurred_at": f"2026-11-22T10:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z",
            "usage": {"prompt_tokens": rng.randint(10, 4000), "completion_tokens": rng.randint(10, 800)},
            "transcript": "",
        }
        base = len(json.dumps(event, separators=(",", ":")))
        text = []
        while base + len(" ".join(text)) < size:
            text.append(rng.choice(words))
        event["transcript"] = " ".join(text)[: max(0, size - base)]
        body = json.dumps(event, separators=(",", ":"))
        signature = "sha256=" + hmac.new(tenants[tenant].encode(), body.encode(), hashlib.sha256).hexdigest()
        f.write(f"/v1/hooks/{tenant}/agent\t{signature}\t{body}\n")
