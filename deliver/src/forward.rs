//! Alerts that reach people: `hookstream deliver` forwards each record of the `alerts` topic
//! (caps reached and recovered, breakers, skewed clocks, failing and disabled endpoints) to
//! every `[[alerts.forward]]` receiver that wants it:
//!
//! * `format = "webhook"`: a Standard Webhooks request (`webhook-id` = `alerts/<partition>/
//!   <offset>`, stable across retries and replays, signed with the forward's secrets) whose
//!   body is the alert as JSON ([`schemas::records::AlertRecord`]);
//! * `format = "alertmanager"`: a `POST` of one Alertmanager alert (API v2). Its labels are
//!   `alertname` (`Hookstream` + the kind in camel case), `tenant`, `kind`, `severity` and
//!   `cap`/`entity`/`source` when set; a `cap_recovered` record resolves the tenant's
//!   `HookstreamCapReached` alert of that cap (`endsAt`).
//!
//! Alerts are forwarded in order, at least once: the consumer (group
//! `<processor.group_id>-alerts-forward`) commits a record's offset once every receiver took
//! it or was given up on. A receiver that fails is retried with backoff (1 s doubling to
//! 60 s) up to its `max_attempts`; a 4xx other than 408 and 429 is not retried. Giving up is
//! logged and counted in `hookstream_alerts_forward_failures_total{forward,reason}`;
//! successes in `hookstream_alerts_forwarded_total{forward}`.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::Message;
use schemas::config::{AlertFormat, AlertForward, Config, ForwardFrom};
use schemas::kafka::{client_config, Role};
use schemas::topics::Topic;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::error::DeliverError;
use crate::sign::Signer;

struct Receiver {
    config: AlertForward,
    signer: Option<Signer>,
}

/// The running forwarder (none when no `[[alerts.forward]]` is configured).
pub struct Forwarder {
    receivers: Vec<Receiver>,
    client: reqwest::Client,
    consumer: StreamConsumer,
    decoder: Option<schemas::registry::Decoder>,
}

impl Forwarder {
    pub fn start(config: &Config) -> Result<Option<Self>, DeliverError> {
        let forwards = &config.alerts.forward;
        if forwards.is_empty() {
            return Ok(None);
        }
        let mut receivers = Vec::new();
        for forward in forwards {
            let secrets = forward
                .secrets
                .iter()
                .map(|s| s.resolve().map_err(DeliverError::Config))
                .collect::<Result<Vec<SecretString>, _>>()?;
            let signer = (!secrets.is_empty())
                .then(|| Signer::new(&secrets))
                .transpose()?;
            metrics::counter!("hookstream_alerts_forwarded_total", "forward" => forward.id.clone())
                .increment(0);
            metrics::counter!("hookstream_alerts_forward_failures_total", "forward" => forward.id.clone(), "reason" => "gave_up")
                .increment(0);
            receivers.push(Receiver {
                config: forward.clone(),
                signer,
            });
        }
        let from = if forwards.iter().any(|f| f.from == ForwardFrom::Earliest) {
            "earliest"
        } else {
            "latest"
        };
        let mut client = client_config(&config.kafka, Role::Consumer);
        client
            .set(
                "group.id",
                format!("{}-alerts-forward", config.processor.group_id),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", from);
        let consumer: StreamConsumer = client.create()?;
        consumer.subscribe(&[&config.topics().name(Topic::Alerts)])?;
        Ok(Some(Self {
            receivers,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| DeliverError::Client(e.to_string()))?,
            consumer,
            decoder: config
                .schema_registry
                .url
                .as_deref()
                .map(schemas::registry::Decoder::new),
        }))
    }

    /// Forwards until `stop` turns true.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<(), DeliverError> {
        tracing::info!(receivers = self.receivers.len(), "forwarding alerts");
        loop {
            let message = tokio::select! {
                _ = stop.changed() => return Ok(()),
                message = self.consumer.recv() => message?,
            };
            let id = format!("alerts/{}/{}", message.partition(), message.offset());
            match self.decode(message.payload().unwrap_or_default()).await {
                Some(alert) => {
                    for receiver in &self.receivers {
                        if receiver.wants(&alert) {
                            self.forward(receiver, &id, &alert, &mut stop).await;
                        }
                    }
                }
                None => tracing::warn!(%id, "an `alerts` record that is not an alert is skipped"),
            }
            self.consumer.commit_message(&message, CommitMode::Async)?;
        }
    }

    async fn decode(&self, value: &[u8]) -> Option<Value> {
        if let (Some(decoder), Some(0)) = (&self.decoder, value.first()) {
            return decoder.decode(value).await.ok();
        }
        serde_json::from_slice::<Value>(value)
            .ok()
            .filter(|v| v["tenant"].is_string() && v["kind"].is_string())
    }

    async fn forward(
        &self,
        receiver: &Receiver,
        id: &str,
        alert: &Value,
        stop: &mut watch::Receiver<bool>,
    ) {
        let name = &receiver.config.id;
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=receiver.config.max_attempts {
            match self.send(receiver, id, alert).await {
                Ok(()) => {
                    metrics::counter!("hookstream_alerts_forwarded_total", "forward" => name.clone())
                        .increment(1);
                    return;
                }
                Err(Failure::Permanent(reason)) | Err(Failure::Retriable(reason))
                    if attempt == receiver.config.max_attempts =>
                {
                    return give_up(name, id, &reason);
                }
                Err(Failure::Permanent(reason)) => return give_up(name, id, &reason),
                Err(Failure::Retriable(reason)) => {
                    tracing::warn!(forward = %name, %id, attempt, %reason, retry_in = ?wait, "forwarding an alert failed");
                    tokio::select! {
                        _ = stop.changed() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    async fn send(&self, receiver: &Receiver, id: &str, alert: &Value) -> Result<(), Failure> {
        let config = &receiver.config;
        let (body, request) = match config.format {
            AlertFormat::Webhook => {
                let body = alert.to_string();
                let timestamp = schemas::time::now_millis() / 1000;
                let signer = receiver
                    .signer
                    .as_ref()
                    .expect("validated: webhooks are signed");
                let signature = signer
                    .sign(id, timestamp, body.as_bytes())
                    .map_err(|e| Failure::Permanent(e.to_string()))?;
                let request = self
                    .client
                    .post(&config.url)
                    .header("webhook-id", id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature);
                (body, request)
            }
            AlertFormat::Alertmanager => {
                let body = json!([alertmanager(alert)]).to_string();
                (body, self.client.post(&config.url))
            }
        };
        let response = request
            .timeout(Duration::from_millis(config.timeout_ms))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Retriable(format!("{e}")))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && status != 408 && status != 429 {
            Err(Failure::Permanent(format!("http_{}", status.as_u16())))
        } else {
            Err(Failure::Retriable(format!("http_{}", status.as_u16())))
        }
    }
}

impl Receiver {
    fn wants(&self, alert: &Value) -> bool {
        let is_in = |list: &[String], field: &str| {
            list.is_empty()
                || list
                    .iter()
                    .any(|v| Some(v.as_str()) == alert[field].as_str())
        };
        is_in(&self.config.tenants, "tenant") && is_in(&self.config.kinds, "kind")
    }
}

enum Failure {
    Permanent(String),
    Retriable(String),
}

fn give_up(forward: &str, id: &str, reason: &str) {
    tracing::error!(%forward, %id, %reason, "an alert could not be forwarded: given up");
    metrics::counter!("hookstream_alerts_forward_failures_total", "forward" => forward.to_owned(), "reason" => "gave_up")
        .increment(1);
}

/// One Alertmanager (API v2) alert for an `alerts` record.
pub fn alertmanager(alert: &Value) -> Value {
    let text = |field: &str| alert[field].as_str().map(str::to_owned);
    let kind = text("kind").unwrap_or_default();
    let (fires_as, resolves) = match kind.as_str() {
        "cap_recovered" => ("cap_reached", true),
        other => (other, false),
    };
    let alertname = format!(
        "Hookstream{}",
        fires_as
            .split('_')
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |c| {
                    c.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect::<String>()
    );
    let severity = match fires_as {
        "endpoint_disabled" | "loop_suspected" | "spike_suspected" => "critical",
        _ => "warning",
    };
    let mut labels = json!({
        "alertname": alertname,
        "tenant": text("tenant").unwrap_or_default(),
        "kind": fires_as,
        "severity": severity,
    });
    for field in ["cap", "entity", "source", "endpoint"] {
        if let Some(value) = text(field) {
            labels[field] = json!(value);
        }
    }
    let at =
        text("raised_at").unwrap_or_else(|| schemas::time::to_rfc3339(schemas::time::now_millis()));
    let mut annotations = json!({ "summary": text("message").unwrap_or_default() });
    for field in ["limit", "observed", "window_start", "window_end"] {
        if !alert[field].is_null() {
            annotations[field] = json!(alert[field].to_string().trim_matches('"'));
        }
    }
    let mut out = json!({ "labels": labels, "annotations": annotations });
    if resolves {
        out["endsAt"] = json!(at);
    } else {
        out["startsAt"] = json!(at);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanager_alerts_carry_the_alert_and_recoveries_resolve() {
        let reached = json!({"tenant":"acme","kind":"cap_reached","cap":"events_per_hour","entity":null,"limit":10,"observed":10,"window_start":"2026-11-25T10:00:00Z","window_end":"2026-11-25T11:00:00Z","raised_at":"2026-11-25T10:20:00Z","message":"events_per_hour reached","source":null});
        let fired = alertmanager(&reached);
        assert_eq!(fired["labels"]["alertname"], "HookstreamCapReached");
        assert_eq!(fired["labels"]["tenant"], "acme");
        assert_eq!(fired["labels"]["cap"], "events_per_hour");
        assert!(fired["labels"].get("entity").is_none());
        assert_eq!(fired["annotations"]["limit"], "10");
        assert_eq!(fired["startsAt"], "2026-11-25T10:20:00Z");

        let mut recovered = reached.clone();
        recovered["kind"] = json!("cap_recovered");
        recovered["raised_at"] = json!("2026-11-25T11:00:00Z");
        let resolved = alertmanager(&recovered);
        assert_eq!(
            resolved["labels"], fired["labels"],
            "the same alert, resolved"
        );
        assert_eq!(resolved["endsAt"], "2026-11-25T11:00:00Z");
        assert!(resolved.get("startsAt").is_none());
    }

    #[test]
    fn hostile_alert_values_map_without_a_panic() {
        for value in [
            json!({}),
            json!({"kind": 5}),
            json!({"kind": "", "tenant": "\u{0}"}),
        ] {
            let _ = alertmanager(&value);
        }
    }
}
