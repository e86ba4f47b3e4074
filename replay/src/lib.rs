//! hookstream's tools for engineers who work with the log: select records of `raw`, `dlq` or
//! `deferred` by partition, offset or time range and header fields, then
//!
//! * count them (`--dry-run`, [`count`]),
//! * **rebuild** from them into fresh topics with a processor under a fresh group
//!   ([`rebuild`]; the live pipeline is untouched and the result equals the live one), or
//! * **redrive** them through the live pipeline, marked with a redrive id the processor dedupes
//!   on ([`redrive`]);
//!
//! and print any topic decoded ([`tail`]). The same operations run from the CLI
//! (`hookstream replay`, `hookstream tail`) or as jobs of the admin HTTP API ([`admin`]).
//! Positions resolve to fixed offset ranges when an operation starts ([`select`]), progress is
//! counted in one place ([`progress`]), and a cancelled operation reports where to resume.

pub mod admin;
pub mod cli;
pub mod count;
pub mod error;
pub mod job;
pub mod position;
pub mod progress;
pub mod reader;
pub mod rebuild;
pub mod record;
pub mod redrive;
pub mod select;
pub mod tail;

pub use error::ReplayError;
