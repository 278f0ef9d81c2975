//! The closing summary of an ingest run, and the countable classes of rejection reasons.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The closing summary: read = Σ written + Σ rejected + duplicates.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub read: u64,
    pub written: BTreeMap<String, u64>,
    pub rejected: BTreeMap<String, u64>,
    pub duplicates: u64,
    pub files: u64,
    /// Files skipped because the manifest shows them already ingested, unchanged.
    pub files_unchanged: u64,
    /// Inputs that could not be read, wholly ("could not be read") or partly ("read partly"), with
    /// the reason.
    pub unreadable: Vec<String>,
    pub parquet_files: u64,
    pub bytes: u64,
    /// What `--reenrich` rewrote, when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reenriched: Option<super::Reenriched>,
}

impl Summary {
    pub fn written_total(&self) -> u64 {
        self.written.values().sum()
    }
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
    /// True when every record read is accounted for.
    pub fn balanced(&self) -> bool {
        self.read == self.written_total() + self.rejected_total() + self.duplicates
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "read {} records from {} files ({} bytes; {} unchanged files skipped)",
            self.read, self.files, self.bytes, self.files_unchanged
        )?;
        for (t, n) in &self.written {
            writeln!(f, "  written  {t:<16} {n}")?;
        }
        for (r, n) in &self.rejected {
            writeln!(f, "  rejected {r:<40} {n}")?;
        }
        writeln!(f, "  duplicates skipped {}", self.duplicates)?;
        for u in &self.unreadable {
            writeln!(f, "  unreadable input: {u}")?;
        }
        if let Some(r) = &self.reenriched {
            writeln!(f, "{r}")?;
        }
        write!(f, "{} Parquet files written", self.parquet_files)
    }
}

/// A short, countable class of a rejection reason (the full reason goes to `_rejected/`).
pub fn reason_class(reason: &str) -> String {
    if reason.starts_with("missing or unparsable timestamp") {
        return "missing or unparsable timestamp".into();
    }
    if reason.starts_with("timestamp out of range") {
        return "timestamp out of range".into();
    }
    if reason.starts_with("CSV row has") {
        return "CSV row with the wrong number of fields".into();
    }
    reason.split([':', '\'', '(']).next().unwrap_or(reason).trim().to_string()
}
