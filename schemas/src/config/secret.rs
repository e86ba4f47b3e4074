use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// A signing secret, given by value, environment variable or file; `id` names it in the
/// `hs-key-id` header and in logs (the secret itself never appears anywhere).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Required for signing secrets; optional where only one secret is meant (admin token).
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub value: Option<SecretString>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl SecretRef {
    pub fn by_value(id: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            value: Some(SecretString::from(value.into())),
            env: None,
            file: None,
        }
    }

    /// Reads the secret. Errors name the variable or file, never the value.
    pub fn resolve(&self) -> Result<SecretString, String> {
        match (&self.value, &self.env, &self.file) {
            (Some(value), None, None) => Ok(value.clone()),
            (None, Some(var), None) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_owned())),
                Ok(_) => Err(format!("environment variable `{var}` is empty")),
                Err(_) => Err(format!("environment variable `{var}` is not set")),
            },
            (None, None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_owned())),
                Ok(_) => Err(format!("file `{}` is empty", path.display())),
                Err(e) => Err(format!("file `{}` cannot be read: {e}", path.display())),
            },
            _ => Err("give exactly one of `value`, `env` or `file`".into()),
        }
    }
}
