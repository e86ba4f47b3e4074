"""Decodes Confluent-framed Avro values with fastavro, an Avro implementation independent of
the one hookstream writes with, fetching each writer schema from the registry by the id the
value carries. stdin: {"registry": URL, "values": [hex, ...]}; stdout: a JSON list of the
decoded records, in order."""

import io
import json
import sys
import urllib.request

import fastavro

request = json.load(sys.stdin)
schemas = {}
decoded = []
for text in request["values"]:
    data = bytes.fromhex(text)
    assert data[0] == 0, "not the Confluent wire format"
    schema_id = int.from_bytes(data[1:5], "big")
    if schema_id not in schemas:
        with urllib.request.urlopen(f"{request['registry']}/schemas/ids/{schema_id}") as reply:
            schemas[schema_id] = fastavro.parse_schema(json.loads(json.load(reply)["schema"]))
    decoded.append(fastavro.schemaless_reader(io.BytesIO(data[5:]), schemas[schema_id]))
json.dump(decoded, sys.stdout)
