"""The reference design hookstream is measured against: a small FastAPI + uvicorn app that
verifies an HMAC-SHA256 signature, produces the body to Kafka with confluent-kafka (acks=all,
idempotent) and answers 202 only after the delivery report, as the ingest does.

Environment: BROKERS, TOPIC, TENANTS (path of tenants.json: {tenant: secret}).
Run: uvicorn app:app --host 127.0.0.1 --port PORT --workers 1 --log-level warning
"""
import asyncio
import hashlib
import hmac
import json
import os
import threading

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

BROKERS = os.environ["BROKERS"]
TOPIC = os.environ.get("TOPIC", "bench.reference.raw")
TENANTS = json.load(open(os.environ["TENANTS"]))

admin = AdminClient({"bootstrap.servers": BROKERS})
for future in admin.create_topics([NewTopic(TOPIC, 3, 1)]).values():
    try:
        future.result()
    except Exception:
        pass  # already exists

producer = Producer({
    "bootstrap.servers": BROKERS,
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
})
stop = threading.Event()


def poll_loop():
    while not stop.is_set():
        producer.poll(0.05)


threading.Thread(target=poll_loop, daemon=True).start()
app = FastAPI()


@app.post("/v1/hooks/{tenant}/{source}")
async def receive(tenant: str, source: str, request: Request):
    secret = TENANTS.get(tenant)
    if secret is None:
        return JSONResponse({"error": "unknown_tenant"}, status_code=404)
    body = await request.body()
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("x-signature", "")):
        return JSONResponse({"error": "invalid_signature"}, status_code=401)
    try:
        event = json.loads(body)
        event_id, entity = event["id"], event["call_id"]
    except (ValueError, KeyError):
        return JSONResponse({"error": "unreadable_request"}, status_code=400)
    loop = asyncio.get_running_loop()
    delivered = loop.create_future()

    def on_delivery(error, message):
        if error is None:
            loop.call_soon_threadsafe(delivered.set_result, (message.partition(), message.offset()))
        else:
            loop.call_soon_threadsafe(delivered.set_exception, RuntimeError(str(error)))

    try:
        producer.produce(TOPIC, key=f"{tenant}/{entity}", value=body, headers={"tenant": tenant, "event_id": event_id},
                         on_delivery=on_delivery)
    except BufferError:
        return JSONResponse({"error": "queue_full"}, status_code=503, headers={"Retry-After": "1"})
    try:
        partition, offset = await delivered
    except RuntimeError as error:
        return JSONResponse({"error": "broker_unavailable", "message": str(error)}, status_code=503)
    return JSONResponse({"status": "accepted", "event_id": event_id, "partition": partition, "offset": offset},
                        status_code=202)
