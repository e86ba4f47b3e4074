#!/usr/bin/env python3
"""Checks the schema files under schemas/ (no Rust build needed).

    python3 -m venv /tmp/schemavenv
    /tmp/schemavenv/bin/python -m pip install jsonschema rfc3339-validator fastavro
    /tmp/schemavenv/bin/python schemas/check.py

1. every .json / .avsc file parses as JSON;
2. every JSON Schema is a valid draft 2020-12 schema, and every example is valid against
   its schema (with format checking);
3. a few values that must be refused are refused (the cross-field rules);
4. every .avsc parses with fastavro, and its field names equal the JSON Schema's
   properties (same names, same order), optional fields being ["null", T] with default null;
5. every example round-trips through Avro binary (arbitrary-JSON fields as JSON text),
   framed in the Confluent wire format, and comes back equal;
6. backward compatibility: every field of each released schema (avro/released/v<N>/) is
   still in the current schema with the same type, every new field has a default, and data
   written with the released schema is readable with the current one.

rfc3339-validator is needed for `format: date-time` to be checked at all (jsonschema
silently skips the format without it).
"""

import copy
import io
import json
import pathlib
import struct
import sys

import fastavro
import jsonschema

try:
    import rfc3339_validator  # noqa: F401  (enables the date-time format check)
except ImportError:
    sys.exit("pip install rfc3339-validator: without it `format: date-time` is not checked")

ROOT = pathlib.Path(__file__).resolve().parent
# Topic value schemas (Avro + JSON Schema + example each).
VALUE_TOPICS = ["events", "state", "rejected", "deferred", "alerts", "usage", "deliveries"]
# Header-only schemas (the value is opaque bytes).
HEADER_TOPICS = ["raw", "dlq"]
# JSON-only value schemas (internal topics of `hookstream deliver`; no Avro form).
JSON_TOPICS = ["delivery", "delivery-endpoints", "delivery-journal"]

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def validator(schema):
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def arbitrary_json_fields(schema):
    """Properties that accept any JSON value (no type, no $ref): Avro carries them as text."""
    return [
        name
        for name, prop in schema["properties"].items()
        if not any(k in prop for k in ("type", "$ref", "anyOf", "oneOf", "const", "enum"))
    ]


def to_avro_datum(value, json_fields, avro_schema):
    """JSON value -> Avro datum: arbitrary JSON as text, absent optional fields as null."""
    datum = {}
    for field in avro_schema["fields"]:
        name = field["name"]
        if name not in value:
            datum[name] = None
        elif name in json_fields:
            datum[name] = json.dumps(value[name], separators=(",", ":"), ensure_ascii=False)
        else:
            datum[name] = value[name]
    return datum


def from_avro_datum(datum, json_fields, json_schema):
    """Avro datum -> JSON value, omitting the optional fields that JSON omits when null."""
    required = set(json_schema.get("required", []))
    value = {}
    for name, v in datum.items():
        if v is None and name not in required:
            continue
        value[name] = json.loads(v) if name in json_fields and v is not None else v
    return value


def confluent_frame(schema_id, body):
    return b"\x00" + struct.pack(">I", schema_id) + body


def confluent_unframe(data):
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0, "not Confluent wire format"
    return schema_id, data[5:]


# 1. everything parses
for path in sorted(ROOT.rglob("*")):
    if path.suffix in (".json", ".avsc"):
        try:
            load(path)
            check(True, f"parses: {path.relative_to(ROOT)}")
        except Exception as e:  # noqa: BLE001
            check(False, f"parses: {path.relative_to(ROOT)}: {e}")

# 2. schemas are valid, examples are valid
validators = {}
for topic in VALUE_TOPICS:
    schema = load(ROOT / "json" / f"{topic}.schema.json")
    validators[topic] = (schema, validator(schema))
for topic in JSON_TOPICS:
    schema = load(ROOT / "json" / f"{topic}.schema.json")
    validators[topic] = (schema, validator(schema))
for topic in HEADER_TOPICS:
    schema = load(ROOT / "json" / f"{topic}.headers.schema.json")
    validators[topic + ".headers"] = (schema, validator(schema))
for name, (schema, v) in validators.items():
    example = load(ROOT / "examples" / f"{name}.json")
    errors = [e.message for e in v.iter_errors(example)]
    check(not errors, f"example valid: examples/{name}.json {errors or ''}")
    if name == "dlq.headers":  # the ingest's dead letters too
        extra = load(ROOT / "examples" / "dlq.ingest.headers.json")
        errors = [e.message for e in v.iter_errors(extra)]
        check(not errors, f"example valid: examples/dlq.ingest.headers.json {errors or ''}")
    expected_id = f"https://hookstream.io/schemas/v1/{name}.schema.json"
    check(schema.get("$id") == expected_id, f"$id of {name}: {schema.get('$id')}")

# 3. the cross-field rules refuse what they must
events = load(ROOT / "examples" / "events.json")
state = load(ROOT / "examples" / "state.json")
bad = {
    "events with payload and payload_base64": ("events", {**events, "payload_base64": ""}),
    "events with neither payload": ("events", {k: v for k, v in events.items() if k != "payload"}),
    "events with an unknown field": ("events", {**events, "extra": 1}),
    "state deleted with a state": ("state", {**state, "deleted": True}),
    "state not deleted without a state": (
        "state",
        {k: v for k, v in state.items() if k != "state"},
    ),
    "rejected without body_sha256 key": (
        "rejected",
        {k: v for k, v in load(ROOT / "examples" / "rejected.json").items() if k != "body_sha256"},
    ),
    "raw headers with a wrong hs-version": (
        "raw.headers",
        {**load(ROOT / "examples" / "raw.headers.json"), "hs-version": "2"},
    ),
    "events with a time that is not RFC 3339": ("events", {**events, "occurred_at": "yesterday"}),
    "dlq headers without hs-error": (
        "dlq.headers",
        {k: v for k, v in load(ROOT / "examples" / "dlq.headers.json").items() if k != "hs-error"},
    ),
    "ingest dlq headers without hs-tenant": (
        "dlq.headers",
        {k: v for k, v in load(ROOT / "examples" / "dlq.ingest.headers.json").items() if k != "hs-tenant"},
    ),
    "processor dlq headers without hs-raw-offset": (
        "dlq.headers",
        {k: v for k, v in load(ROOT / "examples" / "dlq.headers.json").items() if k != "hs-raw-offset"},
    ),
    "rejected with status 200": (
        "rejected",
        {**load(ROOT / "examples" / "rejected.json"), "status": 200},
    ),
}
for what, (name, value) in bad.items():
    check(not validators[name][1].is_valid(value), f"refused: {what}")
ok_values = {
    "events with an empty binary body": ("events", {**{k: v for k, v in events.items() if k != "payload"}, "payload_base64": ""}),
    "events with a JSON null body": ("events", {**events, "payload": None}),
    "state tombstone": (
        "state",
        {**{k: v for k, v in state.items() if k != "state"}, "deleted": True, "last_event_type": "invoice.deleted"},
    ),
    "usage without source": ("usage", {k: v for k, v in load(ROOT / "examples" / "usage.json").items() if k != "source"}),
}
for what, (name, value) in ok_values.items():
    errors = [e.message for e in validators[name][1].iter_errors(value)]
    check(not errors, f"accepted: {what} {errors or ''}")

# 4. Avro schemas parse and agree with the JSON Schemas
avro = {}
for topic in VALUE_TOPICS:
    raw_schema = load(ROOT / "avro" / f"{topic}.avsc")
    parsed = fastavro.parse_schema(raw_schema)
    avro[topic] = (raw_schema, parsed)
    check(raw_schema["namespace"] == "io.hookstream.v1", f"namespace of avro/{topic}.avsc")
    json_schema = validators[topic][0]
    avro_names = [f["name"] for f in raw_schema["fields"]]
    json_names = list(json_schema["properties"])
    check(avro_names == json_names, f"avro/{topic}.avsc fields == json/{topic}.schema.json properties")
    for f in raw_schema["fields"]:
        if isinstance(f["type"], list):
            check(
                f["type"][0] == "null" and "default" in f and f["default"] is None,
                f"avro/{topic}.avsc {f['name']}: optional is [\"null\", T] with default null",
            )

# 5. examples round-trip through Avro in the Confluent wire format
def round_trip(topic):
    raw_schema, parsed = avro[topic]
    json_schema = validators[topic][0]
    json_fields = arbitrary_json_fields(json_schema)
    example = load(ROOT / "examples" / f"{topic}.json")
    datum = to_avro_datum(example, json_fields, raw_schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, datum)
    framed = confluent_frame(42, buf.getvalue())
    schema_id, body = confluent_unframe(framed)
    back = fastavro.schemaless_reader(io.BytesIO(body), parsed)
    check(schema_id == 42 and back == datum, f"avro round-trip datum: {topic}")
    check(from_avro_datum(back, json_fields, json_schema) == example, f"avro round-trip == JSON example: {topic}")
    # container file too (what fastavro.reader reads)
    buf = io.BytesIO()
    fastavro.writer(buf, parsed, [datum])
    buf.seek(0)
    check(list(fastavro.reader(buf)) == [datum], f"avro container round-trip: {topic}")


for topic in VALUE_TOPICS:
    try:
        round_trip(topic)
    except Exception as e:  # noqa: BLE001
        check(False, f"avro round-trip: {topic}: {type(e).__name__}: {e}")

# 6. released schemas: data they wrote is readable with the current schemas
for release in sorted((ROOT / "avro" / "released").iterdir()):
    for path in sorted(release.glob("*.avsc")):
        topic = path.stem
        old = fastavro.parse_schema(load(path))
        raw_schema, new = avro[topic]
        current = {f["name"]: f for f in raw_schema["fields"]}
        released = {f["name"]: f for f in load(path)["fields"]}
        for name, field in released.items():
            check(
                name in current and current[name]["type"] == field["type"],
                f"{release.name}/{path.name} field {name} kept with the same type",
            )
        for name, field in current.items():
            if name not in released:
                check("default" in field, f"avro/{topic}.avsc new field {name} has a default")
        example = load(ROOT / "examples" / f"{topic}.json")
        old_raw = load(path)
        datum = to_avro_datum(example, arbitrary_json_fields(validators[topic][0]), old_raw)
        datum = {f["name"]: datum.get(f["name"]) for f in old_raw["fields"]}
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, old, datum)
        try:
            fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), old, new)
            check(True, f"backward compatible: {release.name}/{path.name} -> avro/{topic}.avsc")
        except Exception as e:  # noqa: BLE001
            check(False, f"backward compatible: {release.name}/{path.name} -> avro/{topic}.avsc: {e}")

print()
if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("all checks passed")
