//! `hookstream trail`: asks the running `hookstream admin` (which keeps the index) and
//! prints the timeline as a table, or JSON with `--json`.

use std::time::Duration;

use schemas::config::Config;
use secrecy::ExposeSecret;

/// What to look up.
#[derive(Debug, Clone, clap::Args)]
pub struct TrailArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The source (with an event id, or with --refused).
    #[arg(long)]
    pub source: Option<String>,
    /// The event id, as the provider sent it.
    pub event_id: Option<String>,
    /// Instead of one event: the events of this entity (with --since).
    #[arg(long, conflicts_with = "event_id")]
    pub entity: Option<String>,
    /// Instead of one event: the source's refused requests (refusals have no trusted event
    /// id; each names its body's SHA-256).
    #[arg(long, requires = "source", conflicts_with_all = ["event_id", "entity"])]
    pub refused: bool,
    /// With --entity or --refused: only since this time (RFC 3339) or this long ago (`2h`,
    /// `30m`, `1d`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// The admin API's base URL (default: `http://` and `admin.listen`).
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("the admin API at {url} did not answer ({reason}); the trail is served by `hookstream admin`, which keeps its index: start it with the same configuration")]
    Unreachable { url: String, reason: String },
    #[error("the admin API answered {status}: {message}")]
    Refused { status: u16, message: String },
}

fn since_rfc3339(text: &str) -> Result<String, CliError> {
    if let Some(ms) = schemas::time::parse_rfc3339(text) {
        return Ok(schemas::time::to_rfc3339(ms));
    }
    let ago = humantime::parse_duration(text.trim_start_matches('-')).map_err(|_| {
        CliError::Usage(format!(
            "--since `{text}`: an RFC 3339 time or a duration ago such as 2h"
        ))
    })?;
    Ok(schemas::time::to_rfc3339(
        schemas::time::now_millis() - ago.as_millis() as i64,
    ))
}

fn encode(part: &str) -> String {
    form_urlencoded::byte_serialize(part.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Runs the command; returns what to print.
pub fn run(config: &Config, args: &TrailArgs) -> Result<String, CliError> {
    let base = args.admin.clone().unwrap_or_else(|| {
        let listen = config.admin.listen.replace("0.0.0.0", "127.0.0.1");
        format!("http://{listen}")
    });
    let base = base.trim_end_matches('/');
    let tenant = encode(&args.tenant);
    let since = args.since.as_deref().map(since_rfc3339).transpose()?;
    let url = match (&args.event_id, &args.entity, args.refused, &args.source) {
        (Some(event), None, false, Some(source)) => format!(
            "{base}/v1/trail/{tenant}/{}/{}",
            encode(source),
            encode(event)
        ),
        (Some(_), _, _, None) => return Err(CliError::Usage("an event id needs --source".into())),
        (None, Some(entity), false, _) => {
            format!("{base}/v1/trail/{tenant}?entity={}", encode(entity))
        }
        (None, None, true, Some(source)) => {
            format!(
                "{base}/v1/trail/{tenant}?refused=true&source={}",
                encode(source)
            )
        }
        _ => {
            return Err(CliError::Usage(
                "name an event (--source S EVENT_ID), an --entity, or --refused with --source"
                    .into(),
            ))
        }
    };
    let url = match since {
        Some(since) if url.contains('?') => format!("{url}&since={}", encode(&since)),
        Some(since) => format!("{url}?since={}", encode(&since)),
        None => url,
    };
    let token = config
        .admin
        .token
        .as_ref()
        .and_then(|t| t.resolve().ok())
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let response = agent
        .get(&url)
        .set("authorization", &format!("Bearer {token}"))
        .call();
    let body: serde_json::Value = match response {
        Ok(response) => response
            .into_json()
            .map_err(|e| CliError::Usage(format!("the admin API's answer: {e}")))?,
        Err(ureq::Error::Status(status, response)) => {
            let body: serde_json::Value = response.into_json().unwrap_or_default();
            return Err(CliError::Refused {
                status,
                message: body["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Err(error) => {
            return Err(CliError::Unreachable {
                url: base.to_owned(),
                reason: error.to_string(),
            })
        }
    };
    if args.json {
        return Ok(serde_json::to_string_pretty(&body).expect("JSON prints") + "\n");
    }
    Ok(render(&body))
}

/// The admin API's answer as tables.
fn render(body: &serde_json::Value) -> String {
    let timelines: Vec<serde_json::Value> = match body.get("events") {
        Some(events) => events.as_array().cloned().unwrap_or_default(),
        None if body.get("lines").is_some() => vec![body.clone()],
        None => {
            let refusals = body["refusals"].as_array().cloned().unwrap_or_default();
            let timeline = serde_json::json!({
                "tenant": body["tenant"], "source": body["source"], "event_id": "(refused requests)",
                "lines": refusals,
            });
            vec![timeline]
        }
    };
    let mut out = String::new();
    for timeline in timelines {
        match serde_json::from_value::<crate::timeline::Timeline>(timeline) {
            Ok(timeline) => out.push_str(&timeline.render()),
            Err(error) => out.push_str(&format!("(unreadable answer: {error})\n")),
        }
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no events\n");
    }
    out
}
