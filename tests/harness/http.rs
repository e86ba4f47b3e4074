//! A plain HTTP client call, returning status, headers and JSON body whatever the status.

pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub json: serde_json::Value,
}

pub fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
    let mut request = ureq::post(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.send_bytes(body) {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("POST {url} failed: {error}"),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_owned);
    let text = response.into_string().unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON reply {status}: {text}"));
    Reply {
        status,
        retry_after,
        json,
    }
}

pub fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap()),
        Err(error) => panic!("GET {url} failed: {error}"),
    }
}

/// A POST with a client-side timeout; transport failures (refused, reset, timed out) are
/// returned as `Err` instead of panicking.
pub fn try_post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Reply, String> {
    let mut request = agent.post(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.send_bytes(body) {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => return Err(error.to_string()),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_owned);
    let text = response.into_string().map_err(|e| e.to_string())?;
    let json =
        serde_json::from_str(&text).map_err(|_| format!("non-JSON reply {status}: {text}"))?;
    Ok(Reply {
        status,
        retry_after,
        json,
    })
}

/// Any method, with headers and an optional JSON body; returns status and JSON reply.
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = ureq::request(method, url);
    if let Some(token) = token {
        request = request.set("authorization", &format!("Bearer {token}"));
    }
    let result = match body {
        Some(body) => request
            .set("content-type", "application/json")
            .send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {url} failed: {error}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON reply {status}: {text}"));
    (status, json)
}

/// The value of the Prometheus sample `name` whose labels include all of `labels`, from the
/// text exposition at `url`.
pub fn metric(url: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (status, text) = get(url);
    assert_eq!(status, 200, "GET {url}: {text}");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample, label_text) = match series.split_once('{') {
                Some((sample, rest)) => (sample, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let present: Vec<(&str, &str)> = label_text
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.trim_matches('"')))
                })
                .collect();
            (sample == name && labels.iter().all(|l| present.contains(l)))
                .then(|| value.parse().ok())
                .flatten()
        })
}
