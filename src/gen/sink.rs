//! Where generated records go: native export files (gzip JSON lines, one file per category and
//! day) or the lake, through the same mapping, enrichment and writer as `wisp ingest`.

use super::records::category_of;
use super::GenError;
use crate::ingest::{RecordSink, Summary};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// A destination for generated records.
pub(super) trait Sink {
    /// One record of `day` (records arrive day by day).
    fn emit(&mut self, day: &str, v: Value) -> Result<(), GenError>;
    /// One record of `category` as one line of JSON text, which `write` appends (no newline).
    fn emit_text(&mut self, day: &str, category: &str, write: &mut dyn FnMut(&mut String)) -> Result<(), GenError>;
    /// Closes everything: the number of files written, and the ingest summary for a lake.
    fn finish(self: Box<Self>) -> Result<(u64, Option<Summary>), GenError>;
}

type RawFile = Box<dyn FinishWrite>;

trait FinishWrite: Write {
    fn finish_file(self: Box<Self>) -> std::io::Result<()>;
}

impl FinishWrite for flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>> {
    fn finish_file(self: Box<Self>) -> std::io::Result<()> {
        self.finish()?.flush()
    }
}

impl FinishWrite for std::io::BufWriter<std::fs::File> {
    fn finish_file(mut self: Box<Self>) -> std::io::Result<()> {
        self.flush()
    }
}

/// Native export files under `root`.
pub(super) struct RawSink {
    root: PathBuf,
    /// The line being written.
    line: String,
    gzip: bool,
    open: BTreeMap<String, RawFile>,
    day: String,
    files: u64,
}

impl RawSink {
    pub(super) fn new(root: PathBuf, gzip: bool) -> Self {
        RawSink { root, line: String::new(), gzip, open: BTreeMap::new(), day: String::new(), files: 0 }
    }

    fn close_all(&mut self) -> Result<(), GenError> {
        for (path, f) in std::mem::take(&mut self.open) {
            f.finish_file().map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e })?;
        }
        Ok(())
    }
}

impl Sink for RawSink {
    fn finish(mut self: Box<Self>) -> Result<(u64, Option<Summary>), GenError> {
        self.close_all()?;
        Ok((self.files, None))
    }

    fn emit(&mut self, day: &str, v: Value) -> Result<(), GenError> {
        let (path, w) = self.file(day, category_of(&v))?;
        serde_json::to_writer(&mut *w, &v)
            .map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e.into() })?;
        w.write_all(b"\n").map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e })
    }

    fn emit_text(&mut self, day: &str, category: &str, write: &mut dyn FnMut(&mut String)) -> Result<(), GenError> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        write(&mut line);
        let (path, w) = self.file(day, category)?;
        let written = w
            .write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e });
        self.line = line;
        written
    }
}

impl RawSink {
    /// The open file of a category and day (opened on first use), with its path.
    fn file(&mut self, day: &str, cat: &str) -> Result<(String, &mut RawFile), GenError> {
        if day != self.day {
            self.close_all()?;
            self.day = day.to_string();
        }
        let (y, m, d) = (&day[0..4], &day[5..7], &day[8..10]);
        let dir = match cat {
            "suricata" => self.root.join(format!("suricata/{day}")),
            "o365" => self.root.join(format!("o365/{day}")),
            c => self.root.join(format!("insights-logs-{}/y={y}/m={m}/d={d}", c.to_ascii_lowercase())),
        };
        let path = dir.join(if self.gzip { "PT24H.json.gz" } else { "PT24H.json" }).display().to_string();
        if !self.open.contains_key(&path) {
            std::fs::create_dir_all(&dir).map_err(|e| GenError::Io { path: dir.clone(), source: e })?;
            let f = std::fs::File::create(&path).map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e })?;
            let w: RawFile = if self.gzip {
                Box::new(flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast()))
            } else {
                Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
            };
            self.open.insert(path.clone(), w);
            self.files += 1;
        }
        let w = self.open.get_mut(&path).expect("opened");
        Ok((path, w))
    }
}

/// The lake, through ingest's record sink.
pub(super) struct LakeSink(pub(super) RecordSink);

impl Sink for LakeSink {
    fn emit(&mut self, _day: &str, v: Value) -> Result<(), GenError> {
        self.0.push(v)?;
        Ok(())
    }

    fn emit_text(&mut self, _day: &str, _category: &str, write: &mut dyn FnMut(&mut String)) -> Result<(), GenError> {
        self.0.push_text(write)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(u64, Option<Summary>), GenError> {
        let sum = self.0.finish()?;
        Ok((sum.parquet_files, Some(sum)))
    }
}
