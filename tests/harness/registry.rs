//! A schema registry for the tests: the subset of the Confluent Schema Registry REST API that
//! hookstream and its clients use, with Confluent's semantics — global schema ids (the same
//! schema gets the same id under any subject), versions per subject, and a compatibility check
//! on registration (default `BACKWARD`: the new schema must read data written with the latest
//! one), done by apache-avro's schema resolution rules. No Confluent or Redpanda registry can
//! be installed here; this is the stand-in, serving on a free loopback port.
//!
//! | request | answer |
//! |---|---|
//! | `POST /subjects/{s}/versions` | `{"id"}`; 409 incompatible, 422 invalid schema |
//! | `GET /schemas/ids/{id}` | `{"schema"}`; 404 (40403) |
//! | `GET /subjects/{s}/versions/latest` | `{"subject","version","id","schema"}`; 404 (40401) |
//! | `POST /compatibility/subjects/{s}/versions/latest` | `{"is_compatible","messages"}`; 404 (40401) |
//! | `PUT /config/{s}` | sets the subject's level (`NONE`, `BACKWARD`, `FORWARD`, `FULL`) |
//! | `GET /subjects` | the subjects |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde_json::{json, Value};

#[derive(Default)]
struct State {
    /// Schema text by id (ids start at 1).
    schemas: Vec<String>,
    /// Versions per subject: schema ids, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
    levels: BTreeMap<String, String>,
}

pub struct Registry {
    pub url: String,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registry {
    pub fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("registry binds"));
        let url = format!(
            "http://{}",
            server.server_addr().to_ip().expect("ip address")
        );
        let state = Arc::new(Mutex::new(State::default()));
        let serving = server.clone();
        let thread = std::thread::spawn(move || {
            for mut request in serving.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let path = request
                    .url()
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let method = request.method().as_str().to_owned();
                let (status, reply) = handle(&mut state.lock().unwrap(), &method, &path, &body);
                let response = tiny_http::Response::from_string(reply.to_string())
                    .with_status_code(status)
                    .with_header(
                        "content-type: application/vnd.schemaregistry.v1+json"
                            .parse::<tiny_http::Header>()
                            .unwrap(),
                    );
                let _ = request.respond(response);
            }
        });
        Self {
            url,
            server,
            thread: Some(thread),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn error(status: u16, code: u32, message: String) -> (u16, Value) {
    (status, json!({"error_code": code, "message": message}))
}

fn handle(state: &mut State, method: &str, path: &str, body: &str) -> (u16, Value) {
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|p| p.replace("%2F", "/"))
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (method, parts.as_slice()) {
        ("POST", ["subjects", subject, "versions"]) => register(state, subject, body),
        ("GET", ["schemas", "ids", id]) => match id
            .parse::<usize>()
            .ok()
            .and_then(|i| i.checked_sub(1).and_then(|i| state.schemas.get(i)))
        {
            Some(schema) => (200, json!({ "schema": schema })),
            None => error(404, 40403, format!("Schema {id} not found")),
        },
        ("GET", ["subjects", subject, "versions", "latest"]) => {
            match state
                .subjects
                .get(*subject)
                .and_then(|v| v.last().copied().map(|id| (v.len(), id)))
            {
                Some((version, id)) => (
                    200,
                    json!({"subject": subject, "version": version, "id": id,
                           "schema": state.schemas[id as usize - 1]}),
                ),
                None => error(404, 40401, format!("Subject '{subject}' not found.")),
            }
        }
        ("POST", ["compatibility", "subjects", subject, "versions", "latest"]) => {
            let Some(latest) = state.subjects.get(*subject).and_then(|v| v.last().copied()) else {
                return error(404, 40401, format!("Subject '{subject}' not found."));
            };
            let candidate = match parse_body(body) {
                Ok(schema) => schema,
                Err(reply) => return reply,
            };
            let messages = incompatibilities(state, subject, latest, &candidate);
            (
                200,
                json!({"is_compatible": messages.is_empty(), "messages": messages}),
            )
        }
        ("PUT", ["config", subject]) => {
            let level = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["compatibility"].as_str().map(str::to_owned));
            match level {
                Some(level) => {
                    state.levels.insert((*subject).to_owned(), level.clone());
                    (200, json!({ "compatibility": level }))
                }
                None => error(422, 42203, "Invalid compatibility level".into()),
            }
        }
        ("GET", ["subjects"]) => (200, json!(state.subjects.keys().collect::<Vec<_>>())),
        _ => error(404, 404, format!("HTTP 404 Not Found: {method} {path}")),
    }
}

fn parse_body(body: &str) -> Result<(String, Schema), (u16, Value)> {
    let request: Value = serde_json::from_str(body)
        .map_err(|e| error(400, 400, format!("Unrecognized JSON: {e}")))?;
    if request["schemaType"].as_str().is_some_and(|t| t != "AVRO") {
        return Err(error(
            422,
            42201,
            "Only AVRO schemas are served here".into(),
        ));
    }
    let text = request["schema"]
        .as_str()
        .ok_or_else(|| error(422, 42201, "Missing schema".into()))?;
    let schema =
        Schema::parse_str(text).map_err(|e| error(422, 42201, format!("Invalid schema: {e}")))?;
    Ok((text.to_owned(), schema))
}

/// Why `candidate` may not follow schema `latest` under the subject's compatibility level.
fn incompatibilities(
    state: &State,
    subject: &str,
    latest: u32,
    candidate: &(String, Schema),
) -> Vec<String> {
    let level = state
        .levels
        .get(subject)
        .map(String::as_str)
        .unwrap_or("BACKWARD");
    let previous = Schema::parse_str(&state.schemas[latest as usize - 1]).unwrap();
    let new = &candidate.1;
    let backward = || SchemaCompatibility::can_read(&previous, new).map_err(|e| e.to_string());
    let forward = || SchemaCompatibility::can_read(new, &previous).map_err(|e| e.to_string());
    let checks: Vec<Result<(), String>> = match level {
        "NONE" => vec![],
        "FORWARD" | "FORWARD_TRANSITIVE" => vec![forward()],
        "FULL" | "FULL_TRANSITIVE" => vec![backward(), forward()],
        _ => vec![backward()],
    };
    checks
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{level}: the new schema cannot follow version of id {latest}: {e}"))
        .collect()
}

fn register(state: &mut State, subject: &str, body: &str) -> (u16, Value) {
    let candidate = match parse_body(body) {
        Ok(candidate) => candidate,
        Err(reply) => return reply,
    };
    let canonical = candidate.1.canonical_form();
    let existing = state
        .schemas
        .iter()
        .position(|text| Schema::parse_str(text).is_ok_and(|s| s.canonical_form() == canonical));
    let versions = state.subjects.get(subject).cloned().unwrap_or_default();
    if let Some(index) = existing {
        let id = index as u32 + 1;
        if versions.contains(&id) {
            return (200, json!({ "id": id }));
        }
    }
    if let Some(latest) = versions.last() {
        let messages = incompatibilities(state, subject, *latest, &candidate);
        if !messages.is_empty() {
            return error(
                409,
                409,
                format!(
                    "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {}",
                    messages.join("; ")
                ),
            );
        }
    }
    let id = match existing {
        Some(index) => index as u32 + 1,
        None => {
            state.schemas.push(candidate.0);
            state.schemas.len() as u32
        }
    };
    state
        .subjects
        .entry(subject.to_owned())
        .or_default()
        .push(id);
    (200, json!({ "id": id }))
}
