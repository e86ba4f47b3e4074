//! One attempt of a delivery, from its gates (disabled endpoint, breaker) through the
//! journaled request to what follows it: the next retry, a dead letter, a disabled endpoint.

use std::time::{Duration, Instant};

use schemas::time::to_rfc3339;
use schemas::trace::TraceParent;

use crate::breaker::Gate;
use crate::endpoints::Endpoint;
use crate::error::DeliverError;
use crate::journal::{Entry, Intent, SETTLE_GRACE_MS};
use crate::record::{AttemptRecord, Delivery};
use crate::run::{now_ms, Deliverer};
use crate::schedule::{self, Response, Verdict, TIERS};
use crate::timing::Setup;
use crate::worker::Slot;

/// Bytes of a response body kept in the attempt log.
const RESPONSE_PREFIX: usize = 256;

/// What came back from one request.
pub(crate) struct Answer {
    response: Response,
    prefix: Option<String>,
    /// The peer address connected to.
    address: Option<String>,
    /// From sending to the response's headers.
    first_byte_ms: Option<u64>,
    /// The set-up of the connection, when this request opened it.
    setup: Option<Setup>,
}

impl Answer {
    fn none(response: Response) -> Self {
        Self {
            response,
            prefix: None,
            address: None,
            first_byte_ms: None,
            setup: None,
        }
    }
}

/// A delivery whose intent is journaled: its request may go.
pub(crate) struct Prepared {
    /// The endpoint as it was when the delivery was prepared (a reload does not change it).
    endpoint: std::sync::Arc<Endpoint>,
    delivery: Delivery,
    attempt_id: String,
    attempted_at: i64,
}

/// What preparing a delivery came to.
pub(crate) enum Step {
    /// Nothing more: dead-lettered or deferred.
    Over(Attempted),
    Ready(Box<Prepared>),
}

/// What a delivery's turn on its endpoint's worker came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempted {
    /// A request went out.
    pub requested: bool,
    /// The endpoint said it is overloaded (429, 503).
    pub throttled: bool,
    pub delivered: bool,
    /// The delivery waits in a retry tier until then (ms since the epoch).
    pub waiting_until: Option<i64>,
}

impl Deliverer {
    /// The same attempt again after `wait`, in the retry tier that keeps its order; returns
    /// when it is due.
    pub(crate) async fn defer(
        &self,
        delivery: Delivery,
        wait: Duration,
    ) -> Result<i64, DeliverError> {
        let (tier, later) = schedule::later(delivery, wait, now_ms());
        let value = serde_json::to_vec(&later).expect("delivery serializes");
        self.send_record(&self.names.tiers[tier], &later.key(), &value)
            .await?;
        Ok(later.due_at)
    }

    /// A delivery's turn, up to its journaled intent: a dead letter (endpoint removed or
    /// disabled), a deferral (endpoint closed), or a request ready to go. Runs ahead of the
    /// endpoint's request slots, so the intent's acknowledgement does not hold one.
    pub(crate) async fn prepare(&self, delivery: Delivery) -> Result<Step, DeliverError> {
        let Some(endpoint) = self.endpoints.get(&delivery.tenant, &delivery.endpoint) else {
            self.dead(delivery, "endpoint_removed").await?;
            return Ok(Step::Over(Attempted::default()));
        };
        if self
            .endpoints
            .is_disabled(&delivery.tenant, &delivery.endpoint)
        {
            self.dead(delivery, "endpoint_disabled").await?;
            return Ok(Step::Over(Attempted::default()));
        }
        let (tenant, id) = (delivery.tenant.clone(), delivery.endpoint.clone());
        if let Gate::Wait(wait) = self.breakers.gate(&tenant, &id, Instant::now()) {
            // The endpoint's breaker is open, or it asked for a pause: no request; the same
            // attempt after it.
            metrics::counter!("hookstream_deliver_breaker_deferred_total", "tenant" => tenant, "endpoint" => id).increment(1);
            let due_at = self.defer(delivery, wait).await?;
            return Ok(Step::Over(Attempted {
                waiting_until: Some(due_at),
                ..Attempted::default()
            }));
        }
        let attempt_id = self.attempt_ids.next();
        let attempted_at = now_ms();
        let key = delivery.key();
        if endpoint.refused.is_none() {
            // Journaled before the request: should this process die during it, the journal's
            // reader logs the attempt as `interrupted`.
            let intent = Intent {
                attempt_id: attempt_id.clone(),
                delivery_id: delivery.delivery_id.clone(),
                tenant: delivery.tenant.clone(),
                endpoint: delivery.endpoint.clone(),
                event_id: delivery.event_id.clone(),
                attempt: delivery.attempt,
                started_at: attempted_at,
                // It may wait for a request slot behind as many requests as run ahead.
                settle_by: attempted_at
                    + endpoint.config.timeout_ms as i64 * (1 + crate::worker::AHEAD as i64)
                    + SETTLE_GRACE_MS,
            };
            self.journal(&key, &Entry::Intent(intent)).await?;
        }
        Ok(Step::Ready(Box::new(Prepared {
            endpoint,
            delivery,
            attempt_id,
            attempted_at,
        })))
    }

    /// A prepared delivery's request, in `slot` (released with the answer), and what
    /// follows it: the outcome journaled, the next retry, a dead letter, a disabled endpoint.
    pub(crate) async fn request(
        &self,
        prepared: Box<Prepared>,
        mut slot: Slot,
    ) -> Result<Attempted, DeliverError> {
        let Prepared {
            endpoint,
            delivery,
            attempt_id,
            attempted_at,
        } = *prepared;
        let endpoint = &*endpoint;
        let (tenant, id) = (delivery.tenant.clone(), delivery.endpoint.clone());
        let key = delivery.key();
        // Disabled or closed while it waited for its slot: no request after all.
        if self.endpoints.is_disabled(&tenant, &id) {
            slot.release(Attempted::default());
            let withdrawn = Entry::Withdrawn { attempt_id };
            let (journaled, dead) = tokio::join!(
                self.journal(&key, &withdrawn),
                self.dead(delivery, "endpoint_disabled")
            );
            journaled?;
            dead?;
            return Ok(Attempted::default());
        }
        if let Some(wait) = self.breakers.closed_for(&tenant, &id, Instant::now()) {
            slot.release(Attempted::default());
            metrics::counter!("hookstream_deliver_breaker_deferred_total", "tenant" => tenant, "endpoint" => id).increment(1);
            let withdrawn = Entry::Withdrawn { attempt_id };
            let (journaled, due_at) =
                tokio::join!(self.journal(&key, &withdrawn), self.defer(delivery, wait));
            journaled?;
            return Ok(Attempted {
                waiting_until: Some(due_at?),
                ..Attempted::default()
            });
        }
        let started = Instant::now();
        let Answer {
            response,
            prefix,
            address,
            first_byte_ms,
            setup,
        } = self
            .send(endpoint, &delivery, &attempt_id, attempted_at / 1000)
            .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        if self.breakers.record(
            &tenant,
            &id,
            schedule::is_failure(&response),
            Duration::from_secs(endpoint.config.breaker_cooldown_secs),
            Instant::now(),
        ) {
            tracing::warn!(%tenant, endpoint = %id, "the endpoint keeps failing: its circuit breaker opened");
        }
        let failed = schedule::is_failure(&response);
        if let Some(status) = self.endpoints.after_attempt(endpoint, failed, now_ms()) {
            if status.disabled.is_some() {
                tracing::warn!(%tenant, endpoint = %id, "the endpoint has failed for its disable_after_failing_secs: disabled");
            }
            self.publish_status(&status).await?;
            self.alert_status(endpoint, &status).await?;
        }
        let verdict = schedule::verdict(&response, delivery.attempt);
        if let Verdict::Wait(wait) = verdict {
            // The endpoint's own pause: no request to it before it ends.
            self.breakers.pause(&tenant, &id, Instant::now() + wait);
        }
        let attempted = Attempted {
            requested: true,
            throttled: matches!(
                response,
                Response::Status {
                    code: 429 | 503,
                    ..
                }
            ),
            delivered: verdict == Verdict::Delivered,
            waiting_until: None,
        };
        // Gone: disabled before the slot is released, so no request of the endpoint's
        // queue goes out after this answer.
        let gone = (verdict == Verdict::Disable).then(|| {
            self.endpoints
                .disable(&delivery.tenant, &delivery.endpoint, "http_410", now_ms())
        });
        slot.release(attempted);
        let (status, error) = match &response {
            Response::Status { code, .. } => (Some(*code), None),
            Response::Timeout => (None, Some("timeout".to_owned())),
            Response::Connection => (None, Some("connection".to_owned())),
            Response::Refused(_) => (None, Some("refused".to_owned())),
        };
        let outcome = match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "retry",
            Verdict::Wait(_) => "wait",
            Verdict::Disable => "disabled",
            Verdict::Dead => "dead",
        };
        metrics::counter!("hookstream_deliver_attempts_total", "tenant" => delivery.tenant.clone(), "endpoint" => delivery.endpoint.clone(), "outcome" => outcome).increment(1);
        metrics::histogram!("hookstream_deliver_attempt_seconds", "tenant" => delivery.tenant.clone(), "endpoint" => delivery.endpoint.clone()).record(duration_ms as f64 / 1000.0);
        // Waits count from the answer.
        let next = self.next(&delivery, verdict, now_ms());
        let log = AttemptRecord {
            attempt_id,
            delivery_id: delivery.delivery_id.clone(),
            tenant: delivery.tenant.clone(),
            endpoint: delivery.endpoint.clone(),
            event_id: delivery.event_id.clone(),
            attempt: delivery.attempt,
            outcome: outcome.to_owned(),
            status,
            error,
            attempted_at: to_rfc3339(attempted_at),
            duration_ms,
            dns_ms: setup.and_then(|s| s.dns_ms),
            connect_ms: setup.map(|s| s.connect_ms),
            first_byte_ms,
            address,
            next_attempt_at: next.as_ref().map(|(_, d)| to_rfc3339(d.due_at)),
            response_prefix: prefix,
        };
        let outcome = Entry::Outcome(log);
        let logged = self.journal(&key, &outcome);
        let waiting_until = next.as_ref().map(|(_, d)| d.due_at);
        match (verdict, next) {
            (_, Some((tier, next))) => {
                let value = serde_json::to_vec(&next).expect("delivery serializes");
                let queued = self.send_record(&self.names.tiers[tier], &key, &value);
                let (a, b) = tokio::join!(logged, queued);
                a?;
                b?;
            }
            (Verdict::Disable, None) => {
                tracing::warn!(tenant = %delivery.tenant, endpoint = %delivery.endpoint, "the endpoint answered 410 Gone: disabled");
                let status = gone.expect("disabled above");
                let (a, b) = tokio::join!(logged, self.publish_status(&status));
                a?;
                b?;
                self.alert_status(endpoint, &status).await?;
                self.dead(delivery, "http_410").await?;
            }
            (Verdict::Dead, None) => {
                logged.await?;
                let reason = schedule::reason(&response);
                self.dead(delivery, &reason).await?;
            }
            _ => logged.await?,
        }
        Ok(Attempted {
            waiting_until,
            ..attempted
        })
    }

    /// Alerts (`alerts`, key the tenant) for a status change that people must hear of: a
    /// failing endpoint at 50 % and 90 % of its `disable_after_failing_secs`
    /// (`endpoint_failing`), and an endpoint disabled (`endpoint_disabled`).
    async fn alert_status(
        &self,
        endpoint: &Endpoint,
        status: &crate::status::EndpointStatus,
    ) -> Result<(), DeliverError> {
        let span = Duration::from_secs(endpoint.config.disable_after_failing_secs);
        let now = now_ms();
        let who = format!(
            "endpoint `{}` of tenant `{}`",
            status.endpoint, status.tenant
        );
        let (kind, message, window) = match (&status.disabled, status.failing_since) {
            (Some(disabled), _) => (
                "endpoint_disabled",
                format!(
                    "{who} is disabled ({}): its deliveries are dead-lettered until `hookstream deliver --enable {}/{}`",
                    disabled.reason, status.tenant, status.endpoint
                ),
                (status.failing_since, Some(disabled.at)),
            ),
            (None, Some(since)) if status.warned_percent > 0 => (
                "endpoint_failing",
                format!(
                    "{who} has failed without a success since {}; it will be disabled at {} unless it recovers",
                    to_rfc3339(since),
                    to_rfc3339(status.disables_at(span).unwrap_or(since))
                ),
                (Some(since), status.disables_at(span)),
            ),
            _ => return Ok(()),
        };
        tracing::warn!(tenant = %status.tenant, endpoint = %status.endpoint, kind, "{message}");
        metrics::counter!("hookstream_deliver_alerts_total", "tenant" => status.tenant.clone(), "kind" => kind).increment(1);
        let alert = schemas::records::AlertRecord {
            tenant: status.tenant.clone(),
            kind: kind.to_owned(),
            cap: None,
            entity: Some(status.endpoint.clone()),
            limit: Some(endpoint.config.disable_after_failing_secs),
            observed: status
                .failing_since
                .map(|since| (now.saturating_sub(since) / 1000).max(0) as u64),
            window_start: window.0.map(to_rfc3339),
            window_end: window.1.map(to_rfc3339),
            raised_at: to_rfc3339(now),
            message,
            source: None,
        };
        let value = self.codecs.encode(schemas::topics::Topic::Alerts, &alert);
        self.send_record(&self.names.alerts, &status.tenant, &value)
            .await
    }

    /// The retry a verdict calls for: its tier and the delivery as it waits there.
    pub(crate) fn next(
        &self,
        delivery: &Delivery,
        verdict: Verdict,
        now: i64,
    ) -> Option<(usize, Delivery)> {
        let (tier, attempt, due_at) = match verdict {
            Verdict::Retry => {
                let next = delivery.attempt + 1;
                let tier = schedule::tier_before(next)?;
                let jitter = schedule::jitter(&delivery.delivery_id, next, tier);
                let due = now + (TIERS[tier] + jitter).as_millis() as i64;
                (tier, next, due)
            }
            Verdict::Wait(wait) => {
                let (tier, wait) = schedule::wait_tier(wait);
                (tier, delivery.attempt, now + wait.as_millis() as i64)
            }
            _ => return None,
        };
        Some((
            tier,
            Delivery {
                attempt,
                due_at,
                ..delivery.clone()
            },
        ))
    }

    pub(crate) async fn dead(&self, delivery: Delivery, reason: &str) -> Result<(), DeliverError> {
        metrics::counter!("hookstream_deliver_dead_letters_total", "tenant" => delivery.tenant.clone(), "endpoint" => delivery.endpoint.clone()).increment(1);
        let key = delivery.key();
        let dead = Delivery {
            reason: Some(reason.to_owned()),
            dead_at: Some(now_ms()),
            ..delivery
        };
        let value = serde_json::to_vec(&dead).expect("delivery serializes");
        self.send_record(&self.names.dlq, &key, &value).await
    }

    /// Appends to the attempt journal, keyed like the endpoint's other records.
    pub(crate) async fn journal(&self, key: &str, entry: &Entry) -> Result<(), DeliverError> {
        let value = serde_json::to_vec(entry).expect("journal entry serializes");
        self.send_record(&self.names.journal, key, &value).await
    }

    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        delivery: &Delivery,
        attempt_id: &str,
        timestamp: i64,
    ) -> Answer {
        let body = delivery.body.as_str().as_bytes();
        let signature = match endpoint.signer.sign(&delivery.event_id, timestamp, body) {
            Ok(signature) => signature,
            Err(error) => {
                tracing::error!(%error, "cannot sign");
                return Answer::none(Response::Connection);
            }
        };
        if let Some(refused) = endpoint.refused {
            return Answer::none(Response::Refused(refused));
        }
        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        let upstream = delivery
            .traceparent
            .as_deref()
            .and_then(|t| TraceParent::parse(t.as_bytes()));
        let trace = upstream.map_or_else(TraceParent::root, |u| u.child());
        let request = endpoint
            .client
            .post(&endpoint.config.url)
            .timeout(endpoint.timeout())
            .header(schemas::trace::HEADER, trace.header())
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("hookstream-attempt-id", attempt_id)
            .body(delivery.body.as_str().to_owned());
        let answer = match request.send().await {
            Ok(mut response) => {
                let first_byte_ms = Some(started.elapsed().as_millis() as u64);
                let address = response.remote_addr().map(|a| a.to_string());
                let setup = endpoint.connect_times.take(&response);
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                // At most the prefix is read: an endpoint answering gigabytes costs nothing.
                let mut bytes = Vec::new();
                while bytes.len() < RESPONSE_PREFIX {
                    match response.chunk().await {
                        Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                bytes.truncate(RESPONSE_PREFIX);
                Answer {
                    response: Response::Status { code, retry_after },
                    prefix: Some(String::from_utf8_lossy(&bytes).into_owned()),
                    address,
                    first_byte_ms,
                    setup,
                }
            }
            Err(error) if error.is_timeout() => Answer::none(Response::Timeout),
            Err(error) => match crate::guard::refused_in(&error) {
                Some(refused) => Answer::none(Response::Refused(refused.class)),
                None => Answer::none(Response::Connection),
            },
        };
        export_attempt(
            delivery,
            attempt_id,
            &trace,
            upstream,
            started_at,
            &answer.response,
        );
        answer
    }

    /// Writes an endpoint's status to `delivery-endpoints` (and metrics).
    pub(crate) async fn publish_status(
        &self,
        status: &crate::status::EndpointStatus,
    ) -> Result<(), DeliverError> {
        metrics::gauge!("hookstream_deliver_endpoint_disabled", "tenant" => status.tenant.clone(), "endpoint" => status.endpoint.clone())
            .set(if status.disabled.is_some() { 1.0 } else { 0.0 });
        let value = serde_json::to_vec(status).expect("status serializes");
        self.send_record(&self.names.endpoints, &status.key(), &value)
            .await
    }
}

/// The attempt's span of the event's trace (exported when OTLP export is on): the request,
/// whose `traceparent` header carries this span's context to the endpoint.
fn export_attempt(
    delivery: &Delivery,
    attempt_id: &str,
    trace: &TraceParent,
    upstream: Option<TraceParent>,
    started_at: std::time::SystemTime,
    response: &Response,
) {
    if !schemas::trace::exporting() {
        return;
    }
    let (status, error) = match response {
        Response::Status { code, .. } => (
            code.to_string(),
            (!(200..300).contains(code)).then(|| format!("http_{code}")),
        ),
        Response::Timeout => (String::new(), Some("timeout".to_owned())),
        Response::Connection => (String::new(), Some("connection".to_owned())),
        Response::Refused(class) => (String::new(), Some(format!("refused: {class}"))),
    };
    schemas::trace::export(schemas::trace::Span {
        name: "hookstream.deliver",
        kind: schemas::trace::Kind::Client,
        context: *trace,
        parent: upstream,
        start: started_at,
        end: std::time::SystemTime::now(),
        attributes: &[
            ("hookstream.tenant", delivery.tenant.clone()),
            ("hookstream.endpoint", delivery.endpoint.clone()),
            ("hookstream.event_id", delivery.event_id.clone()),
            ("hookstream.attempt", delivery.attempt.to_string()),
            ("hookstream.attempt_id", attempt_id.to_owned()),
            ("http.response.status_code", status),
        ],
        error,
    });
}
