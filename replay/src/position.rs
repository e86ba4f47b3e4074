//! Where a selection starts or ends in a partition: `beginning`, `end`, an offset, an
//! RFC 3339 time, or a time relative to now (`-2h`, `-30m`, `-1d`, `-90s`). Times resolve
//! through the broker's time index (ListOffsets, `offsets_for_times`) to the first record at
//! or after the time.

use std::str::FromStr;

use schemas::time::{parse_rfc3339, Millis};

use crate::ReplayError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Position {
    Beginning,
    End,
    Offset(i64),
    Time(Millis),
}

impl Position {
    /// Parses `text`; relative times count back from `now`.
    pub fn parse(text: &str, now: Millis) -> Result<Self, ReplayError> {
        let text = text.trim();
        match text {
            "beginning" | "earliest" => return Ok(Self::Beginning),
            "end" | "latest" => return Ok(Self::End),
            _ => {}
        }
        if let Ok(offset) = text.parse::<i64>() {
            if offset < 0 {
                return Err(ReplayError::invalid(format!(
                    "`{text}`: an offset cannot be negative (for a time before now write e.g. `-2h`)"
                )));
            }
            return Ok(Self::Offset(offset));
        }
        if let Some(ago) = text.strip_prefix('-') {
            let duration = humantime::parse_duration(ago).map_err(|e| {
                ReplayError::invalid(format!("`{text}`: not a relative time like `-2h` ({e})"))
            })?;
            let ago = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
            return Ok(Self::Time(now.saturating_sub(ago)));
        }
        parse_rfc3339(text).map(Self::Time).ok_or_else(|| {
            ReplayError::invalid(format!(
                "`{text}`: expected `beginning`, `end`, an offset, an RFC 3339 time or a relative time like `-2h`"
            ))
        })
    }
}

impl FromStr for Position {
    type Err = ReplayError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text, schemas::time::now_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let now = 10 * 3_600_000;
        assert_eq!(
            Position::parse("beginning", now).unwrap(),
            Position::Beginning
        );
        assert_eq!(Position::parse("end", now).unwrap(), Position::End);
        assert_eq!(Position::parse("42", now).unwrap(), Position::Offset(42));
        assert_eq!(
            Position::parse("-2h", now).unwrap(),
            Position::Time(8 * 3_600_000)
        );
        assert_eq!(
            Position::parse("-90s", now).unwrap(),
            Position::Time(now - 90_000)
        );
        assert_eq!(
            Position::parse("1970-01-01T00:00:01.500Z", now).unwrap(),
            Position::Time(1_500)
        );
    }

    #[test]
    fn rejects_what_it_cannot_read_with_the_text() {
        for bad in ["-1", "yesterday", "-2 fortnights", ""] {
            let err = Position::parse(bad, 0).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }
}
