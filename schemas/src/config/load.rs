use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use super::Config;
use crate::SchemasError;

const OVERRIDABLE: [&str; 6] = ["kafka", "ingest", "processor", "log", "reload", "telemetry"];

impl Config {
    /// Reads `path`, applies `HOOKSTREAM_*` overrides, and validates the result.
    pub fn load(path: &Path) -> Result<Self, SchemasError> {
        let config = Self::parse(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `path` and applies `HOOKSTREAM_*` overrides, without validation.
    pub fn parse(path: &Path) -> Result<Self, SchemasError> {
        if !path.is_file() {
            return Err(SchemasError::Config(format!(
                "config file `{}` does not exist or is not a file",
                path.display()
            )));
        }
        Self::from_figment(Figment::from(Toml::file(path)))
    }

    /// Parses TOML text (with `HOOKSTREAM_*` overrides), without validation.
    pub fn parse_str(toml: &str) -> Result<Self, SchemasError> {
        Self::from_figment(Figment::from(Toml::string(toml)))
    }

    fn from_figment(figment: Figment) -> Result<Self, SchemasError> {
        let env = Env::prefixed("HOOKSTREAM_")
            .split("__")
            // Keys are still upper-case here; figment lowercases them afterwards.
            .filter(|key| {
                let section = key.as_str().split('.').next().unwrap_or_default();
                OVERRIDABLE.iter().any(|s| section.eq_ignore_ascii_case(s))
            });
        figment.merge(env).extract().map_err(|e| {
            let problems: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            SchemasError::Config(problems.join("\n"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file() {
        // A variable name no other test uses; set once, never removed concurrently.
        std::env::set_var("HOOKSTREAM_INGEST__MAX_BODY_BYTES", "2048");
        std::env::set_var("HOOKSTREAM_UNRELATED", "ignored");
        let config = Config::parse_str("[ingest]\nmax_body_bytes = 10\n").unwrap();
        assert_eq!(config.ingest.max_body_bytes, 2048);
    }
}
