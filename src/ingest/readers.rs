//! Reading input files: gzip, CSV, streamed JSON arrays, whole JSON documents and JSON lines, each
//! record handed to the run with its position (line, or line and record, or record index).

use super::chunks::{self, Chunk, MappedFile};
use super::formats::{self, Format};
use super::pool::{Done, Job, Pool};
use super::run::{Mapper, Outcome, Pos, Prepared, Row, Run};
use super::source::{self, InputFile, ManifestEntry};
use crate::lake::LakeError;
use serde_json::{Map, Value};
use std::io::{BufRead, Read};

/// Why a file stopped: the lake failed (the run stops), or the file could not be read (it is
/// reported as unreadable; the other files are still ingested).
pub(super) enum FileError {
    Lake(LakeError),
    Read(String),
}

impl From<LakeError> for FileError {
    fn from(e: LakeError) -> Self {
        FileError::Lake(e)
    }
}

/// The read buffer of an input file.
const READ_BUF: usize = 64 << 10;

/// Reads one file, finding its shape (CSV, a JSON array, one JSON document, JSON lines) from its
/// first non-blank line. Returns `None` when the manifest shows it unchanged.
pub(super) fn read_file(
    run: &mut Run,
    f: &InputFile,
    prior: Option<&ManifestEntry>,
    bar: &indicatif::ProgressBar,
) -> Result<Option<ManifestEntry>, FileError> {
    let head = f.head_hash(source::HEAD_LEN).map_err(FileError::Read)?;
    let mut start = (0u64, 0u64);
    if let Some(p) = prior {
        // Compare the same leading bytes the earlier run hashed: a grown file keeps its head.
        let same_head = if p.head_len == f.size.min(source::HEAD_LEN) {
            p.head_hash == head
        } else {
            p.head_len <= f.size && f.head_hash(p.head_len).map_err(FileError::Read)? == p.head_hash
        };
        if same_head && p.size == f.size && p.consumed_bytes == f.size {
            return Ok(None);
        }
        if same_head && p.resumable && f.size > p.consumed_bytes {
            start = (p.consumed_bytes, p.consumed_lines); // an append blob that grew
        }
    }
    run.summary.bytes += f.size - start.0;
    let read_ahead = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted =
        CountingReader { inner: f.open(start.0).map_err(FileError::Read)?, n: read_ahead.clone(), bar: bar.clone() };
    // A small buffer: chunks of lines are read past it straight into their own buffers (a read
    // at least as large as the buffer skips it); only the tail of a chunk's last line and the
    // first lines go through it.
    let mut reader: Box<dyn BufRead> = if f.gzip {
        Box::new(std::io::BufReader::with_capacity(READ_BUF, flate2::read::MultiGzDecoder::new(counted)))
    } else {
        Box::new(std::io::BufReader::with_capacity(READ_BUF, counted))
    };
    let display = f.display.clone();
    let mut first = Vec::new();
    let read_err = |e: std::io::Error| FileError::Read(e.to_string());
    // Skip leading blank lines to find the shape.
    let mut lines_before = 0u64;
    let mut offset = start.0;
    loop {
        first.clear();
        let n = match reader.read_until(b'\n', &mut first) {
            Ok(n) => n,
            // A 0-byte or truncated gzip is an empty file for our purposes when nothing was read.
            Err(e) if f.gzip && e.kind() == std::io::ErrorKind::UnexpectedEof && offset == 0 => 0,
            Err(e) => return Err(read_err(e)),
        };
        if n == 0 {
            return Ok(Some(f.entry(head, f.size, start.1 + lines_before, !f.gzip)));
        }
        if first.iter().all(u8::is_ascii_whitespace) {
            lines_before += 1;
            offset += n as u64;
            continue;
        }
        break;
    }
    let lead = first.iter().find(|b| !b.is_ascii_whitespace()).copied().unwrap_or(b' ');
    let forced_csv = matches!(run.format, Format::NetworkCsv)
        || (run.format == Format::LogAnalytics && lead != b'{' && lead != b'[');
    let not_json = lead != b'{' && lead != b'[' && !first.starts_with(&[0xef, 0xbb, 0xbf, b'{']);
    if (forced_csv || not_json) && (lead.is_ascii_graphic() || lead >= 0x80) {
        let mut all = first.clone();
        reader.read_to_end(&mut all).map_err(read_err)?;
        csv_file(run, &display, &all, start.1 + lines_before)?;
        return Ok(Some(f.entry(head, f.size, 0, false)));
    }
    if lead == b'[' {
        // A JSON array (a Log Analytics or O365 export): streamed element by element.
        json_array(run, &display, first, &mut reader)?;
        return Ok(Some(f.entry(head, f.size, 0, false)));
    }
    if lead == b'{' && serde_json::from_slice::<serde::de::IgnoredAny>(trim_bom(&first)).is_err() {
        // A pretty-printed or single-line document: read it whole.
        let mut all = first.clone();
        reader.read_to_end(&mut all).map_err(read_err)?;
        match serde_json::from_slice::<Value>(trim_bom(&all)) {
            Ok(v) => {
                let raw = String::from_utf8_lossy(&all).trim().to_string();
                run.value(&display, Pos::Record(0), v, &raw)?;
                return Ok(Some(f.entry(head, f.size, 0, false)));
            }
            Err(err) if all.iter().filter(|&&b| b == b'\n').count() <= 1 => {
                let raw = String::from_utf8_lossy(&all).trim().to_string();
                let line = start.1 + lines_before + 1;
                run.reject(&display, Pos::Line(line), &json_reason(&err, &all), &raw)?;
                return Ok(Some(f.entry(head, f.size, start.1 + lines_before + 1, !f.gzip)));
            }
            Err(_) => {
                // Not one document: JSON lines whose first line is broken.
                let mut cursor = std::io::Cursor::new(all);
                let src = LineSource::Read(&mut cursor, Vec::new());
                let (lines, _) = json_lines(run, &display, src, start.1 + lines_before)?;
                return Ok(Some(f.entry(head, f.size, lines, false)));
            }
        }
    }
    // A local, uncompressed file is mapped from its first line on, not read (`chunks`).
    let mapped = if run.mmap && !f.gzip { f.local_file().and_then(|file| MappedFile::new(file).ok()) } else { None };
    let src = match mapped {
        Some(file) => {
            chunks::on_sigbus();
            LineSource::Mapped {
                file,
                pos: offset,
                bar: bar.clone(),
                counted: start.0 + read_ahead.load(std::sync::atomic::Ordering::Relaxed),
            }
        }
        None => LineSource::Read(&mut reader, first),
    };
    let (lines, consumed) = json_lines(run, &display, src, start.1 + lines_before)?;
    let consumed_bytes = offset + consumed;
    let size = if f.gzip { f.size } else { consumed_bytes };
    Ok(Some(f.entry(head, size, lines, !f.gzip)))
}

/// Splits a top-level JSON array into its elements' bytes as chunks arrive, without parsing
/// them: strings (with their escapes) and nested brackets are tracked, so a comma or bracket
/// inside a string or a nested value never splits an element. Bytes before the opening `[` and
/// after the closing `]` are ignored.
#[derive(Debug, Default)]
pub(crate) struct ArraySplitter {
    /// 0 before the array, 1 inside the top-level array, more inside nested values.
    depth: usize,
    in_str: bool,
    esc: bool,
    elem: Vec<u8>,
    closed: bool,
}

impl ArraySplitter {
    /// Feeds one chunk; `out` receives each complete element (trimmed; empty ones are skipped).
    /// Returns true once the array has closed.
    pub(crate) fn feed<E>(&mut self, chunk: &[u8], out: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<bool, E> {
        for &c in chunk {
            if self.closed {
                break;
            }
            if self.depth == 0 {
                if c == b'[' {
                    self.depth = 1;
                }
                continue;
            }
            if self.in_str {
                self.elem.push(c);
                if self.esc {
                    self.esc = false;
                } else if c == b'\\' {
                    self.esc = true;
                } else if c == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match c {
                b'"' => {
                    self.in_str = true;
                    self.elem.push(c);
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    self.elem.push(c);
                }
                b'}' | b']' if self.depth > 1 => {
                    self.depth -= 1;
                    self.elem.push(c);
                }
                b']' => {
                    self.emit(out)?;
                    self.closed = true;
                }
                b',' if self.depth == 1 => self.emit(out)?,
                _ => self.elem.push(c),
            }
        }
        Ok(self.closed)
    }

    fn emit<E>(&mut self, out: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let text = self.elem.trim_ascii();
        if !text.is_empty() {
            out(text)?;
        }
        self.elem.clear();
        Ok(())
    }

    /// At the end of the input: an array that never closed leaves a truncated last element.
    pub(crate) fn finish<E>(mut self, out: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.closed {
            self.emit(out)?;
        }
        Ok(())
    }
}

/// Streams the elements of a top-level JSON array without holding the whole document: each
/// element is one record (index from 0). A malformed or truncated element is rejected; the rest
/// of the array still ingests.
fn json_array(run: &mut Run, file: &str, first: Vec<u8>, reader: &mut dyn BufRead) -> Result<(), FileError> {
    let mut index = 0u64;
    let mut element = |text: &[u8]| -> Result<(), FileError> {
        let pos = Pos::Record(index);
        index += 1;
        match serde_json::from_slice::<Value>(text) {
            Ok(v) => run.record(file, pos, &v, &String::from_utf8_lossy(text))?,
            Err(e) => run.reject(file, pos, &json_reason(&e, text), &String::from_utf8_lossy(text))?,
        }
        Ok(())
    };
    let mut split = ArraySplitter::default();
    let mut closed = split.feed(trim_bom(&first), &mut element)?;
    while !closed {
        let chunk = reader.fill_buf().map_err(|e| FileError::Read(format!("in the JSON array: {e}")))?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        closed = split.feed(chunk, &mut element)?;
        reader.consume(n);
    }
    split.finish(&mut element)
}

fn trim_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(b)
}

pub(super) fn json_reason(e: &serde_json::Error, bytes: &[u8]) -> String {
    if std::str::from_utf8(bytes).is_err() {
        return "invalid JSON: not UTF-8 text (binary data?)".into();
    }
    if e.is_eof() {
        return format!("truncated JSON: {e}");
    }
    format!("invalid JSON: {e}")
}

/// JSON Lines: one record (or one envelope) per line. Returns (lines consumed, bytes consumed);
/// an unterminated, unparsable last line is rejected but not counted as consumed, so a grown
/// append blob re-reads it whole next time. With worker threads, chunks of lines are mapped in
/// parallel and committed in input order: the lake and the counts do not depend on the threads.
fn json_lines(run: &mut Run, file: &str, mut src: LineSource<'_>, mut line_no: u64) -> Result<(u64, u64), FileError> {
    let mut consumed = 0u64;
    // Chunk buffers come back from the mapping threads and are read into again: fresh ones of a
    // few MB each would be pages the kernel zeroes for every chunk.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    loop {
        let (chunk, err) = src.next(&mut spare, run.chunk_bytes);
        let done = chunk.is_none() || err.is_some();
        if let Some(chunk) = chunk {
            // On one thread a chunk is mapped here; with a pool, the oldest result comes back
            // once enough chunks are in flight.
            let ready = match run.pool.as_mut() {
                None => Some(map_lines(&mut run.mapper, chunk)),
                Some(pool) => pool.submit(Job::Lines(chunk)).map(lines_of),
            };
            if let Some(out) = ready {
                spare.push(commit_lines(run, file, out, &mut line_no, &mut consumed)?);
            }
        }
        if done {
            while let Some(out) = run.pool.as_mut().and_then(Pool::next) {
                commit_lines(run, file, lines_of(out), &mut line_no, &mut consumed)?;
            }
        }
        if let Some(e) = err {
            return Err(FileError::Read(format!("after line {line_no}: {e}")));
        }
        if done {
            return Ok((line_no, consumed));
        }
    }
}

/// Where the chunks of a file's lines come from.
enum LineSource<'a> {
    /// Read, the bytes already read (its first line) carried into the first chunk.
    Read(&'a mut dyn BufRead, Vec<u8>),
    /// Mapped from a local file (`chunks::MappedFile`).
    Mapped {
        file: MappedFile,
        /// The next chunk's first byte.
        pos: u64,
        bar: indicatif::ProgressBar,
        /// The end of the bytes the progress bar counted already (read ahead by the reader that
        /// found the file's shape).
        counted: u64,
    },
}

impl LineSource<'_> {
    /// The next chunk of whole lines (None at the end), and the error that ended the input.
    fn next(&mut self, spare: &mut Vec<Vec<u8>>, size: usize) -> (Option<Chunk>, Option<std::io::Error>) {
        match self {
            LineSource::Read(reader, carry) => {
                let buf = spare.pop().unwrap_or_default();
                let (chunk, err) = read_chunk(*reader, buf, carry, size);
                carry.clear();
                ((!chunk.is_empty()).then(|| chunk.into()), err)
            }
            LineSource::Mapped { file, pos, bar, counted } => match file.chunk(*pos, size) {
                Ok(Some(chunk)) => {
                    let end = *pos + chunk.bytes().len() as u64;
                    bar.inc(end.saturating_sub((*pos).max(*counted)));
                    *pos = end;
                    (Some(chunk), None)
                }
                Ok(None) => (None, None),
                Err(e) => (None, Some(std::io::Error::new(e.kind(), format!("cannot map the file: {e}")))),
            },
        }
    }
}

fn lines_of(done: Done) -> LinesOut {
    match done {
        Done::Lines(out) => out,
        Done::Values(_) => unreachable!("only lines are sent for a file"),
    }
}

/// What mapping one chunk of lines produced.
pub(super) struct LinesOut {
    pub(super) prepared: Result<Prepared, LakeError>,
    /// Lines counted in the chunk.
    lines: u64,
    /// Bytes consumed (all but an unterminated, unparsable last line).
    consumed: u64,
    /// The chunk's buffer, to read the next chunk into.
    chunk: Vec<u8>,
}

impl LinesOut {
    /// What the chunk's lines became, and its buffer.
    pub(super) fn into_parts(self) -> (Result<Prepared, LakeError>, Vec<u8>) {
        (self.prepared, self.chunk)
    }
}

/// Maps the lines of one chunk (whole lines: only the input's last may lack its newline),
/// numbered from 1 (the committing thread adds the lines before the chunk).
pub(super) fn map_lines(mapper: &mut Mapper, chunk: Chunk) -> LinesOut {
    // A chunk that is UTF-8 throughout (as exports are) has its typed rows' `raw` as ranges of it
    // (`Prepared::with_text`), not copies. Each line is checked as it is mapped, while it is in
    // cache (a check of the whole chunk first read it all from memory once more before the lines
    // were split); a chunk with a line that is not UTF-8 is mapped again, its rows holding their
    // own text (mapping has no effect but its outcomes: the same ones the second time).
    let bytes = chunk.bytes();
    let (ranges, (outcomes, line_no, consumed)) = match map_chunk_lines(mapper, bytes, true) {
        Some(mapped) => (true, mapped),
        None => (false, map_chunk_lines(mapper, bytes, false).expect("lines mapped without ranges always are")),
    };
    // Rows whose `raw` is a range of the chunk, all of one (table, day): the chunk is handed over
    // as the Arrow buffer their `raw` views point into (no record copied) and a spare buffer read
    // into next in its place. Rows of several (a file mixing categories, a chunk across midnight)
    // keep copies: every batch holding the buffer counts it whole against the writer's budget and
    // keeps it until its own file is written, so one buffer in the batches of tables flushed at
    // different times would flush them early, into small files.
    //
    // SAFETY (both below): mapped with ranges, every line's text was checked as UTF-8 and the
    // rest of each line is a byte-order mark, ASCII white space and its newline
    // (`map_chunk_lines`); the lines are the whole chunk, one after the other: so the chunk is
    // UTF-8, and so are its bytes moved into the buffer without being copied or changed.
    if ranges && one_group_of_ranges(&outcomes) {
        // A read chunk's place taken by a spare buffer; a mapping needs none.
        let spare = if matches!(chunk, Chunk::Read(_)) { chunks::take() } else { Vec::new() };
        let buf = chunk.share();
        let ext = unsafe { std::str::from_utf8_unchecked(buf.as_slice()) };
        let prepared = Prepared::with_text(outcomes, ext, Some(&buf));
        return LinesOut { prepared, lines: line_no, consumed, chunk: spare };
    }
    let ext = if ranges { unsafe { std::str::from_utf8_unchecked(bytes) } } else { "" };
    let prepared = Prepared::with_text(outcomes, ext, None);
    let chunk = match chunk {
        Chunk::Read(v) => v,
        Chunk::Mapped(_) => Vec::new(),
    };
    LinesOut { prepared, lines: line_no, consumed, chunk }
}

/// The outcomes of a chunk's lines, the lines counted and the bytes consumed. With `ranges`, each
/// line's text is checked as UTF-8 and its typed row's `raw` is that range of the chunk; None at
/// the first line that is not UTF-8. Without, each row holds its own text.
fn map_chunk_lines(mapper: &mut Mapper, chunk: &[u8], ranges: bool) -> Option<(Vec<Outcome>, u64, u64)> {
    let mut line_no = 0u64;
    // Room for the chunk's lines at a few hundred bytes each (a sign-in's is 1-1.5 KB, an O365
    // record's 400 bytes): grown by doubling, the outcomes were copied over and over.
    let mut outcomes = Vec::with_capacity(chunk.len() / 384 + 16);
    let mut consumed = 0u64;
    for line in lines_of_chunk(chunk) {
        line_no += 1;
        let terminated = line.last() == Some(&b'\n');
        // The line is its text between a byte-order mark and ASCII white space, both UTF-8.
        let text = trim_bom(line.trim_ascii_end());
        if text.iter().all(u8::is_ascii_whitespace) {
            consumed += line.len() as u64;
            continue;
        }
        // A line checked as UTF-8 is parsed without serde_json checking every string again;
        // one that is not UTF-8 goes through the byte parser (for its error, as before).
        let pos = Pos::Line(line_no);
        let parsed = match std::str::from_utf8(text) {
            Ok(t) if ranges => {
                mapper.text_at(pos, t, Some(text.as_ptr() as usize - chunk.as_ptr() as usize), &mut outcomes)
            }
            Ok(t) => mapper.text(pos, t, &mut outcomes),
            Err(_) if ranges => return None,
            Err(_) => serde_json::from_slice::<Value>(text).map(|v| mapper.value(pos, v, "", &mut outcomes)),
        };
        match parsed {
            Ok(()) => consumed += line.len() as u64,
            Err(e) => {
                let raw = String::from_utf8_lossy(text).trim_end().to_string();
                outcomes.push(mapper.reject(Pos::Line(line_no), &json_reason(&e, text), &raw));
                if terminated {
                    consumed += line.len() as u64;
                } else {
                    line_no -= 1;
                }
            }
        }
    }
    Some((outcomes, line_no, consumed))
}

/// Whether the rows with ranges of the chunk (external cells) are some, all of one (table, day).
fn one_group_of_ranges(outcomes: &[Outcome]) -> bool {
    let mut group = None;
    for o in outcomes {
        if let Outcome::Row { table, day, row: Row::Compact(c), .. } = o {
            if c.has_ext() {
                match group {
                    None => group = Some((table, day)),
                    Some((t, d)) if t == table && d == day => {}
                    Some(_) => return false,
                }
            }
        }
    }
    group.is_some()
}

/// The lines of a chunk, each with its `\n` (the last without, if the chunk does not end with
/// one): `split_inclusive` found with `memchr` rather than byte by byte.
fn lines_of_chunk(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= chunk.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &chunk[start..]).map_or(chunk.len(), |i| start + i + 1);
        let line = &chunk[start..end];
        start = end;
        Some(line)
    })
}

/// Reads `carry` and then about `size` bytes of whole lines into `buf` and returns the buffer
/// cut to them. A read error keeps the whole lines read before it and is returned beside them.
///
/// `buf`'s bytes are read into as they are: a buffer that comes back from mapping keeps its
/// length, so only the part of it never read into before is zeroed (a `read_to_end` into its
/// spare capacity zeroed the whole chunk again for every chunk: 2% of an ingest's instructions).
fn read_chunk(
    reader: &mut dyn BufRead,
    mut buf: Vec<u8>,
    carry: &[u8],
    size: usize,
) -> (Vec<u8>, Option<std::io::Error>) {
    let mut filled = carry.len();
    let end = size.max(filled);
    if buf.len() < end {
        // Room for the tail of the last line too, read past `end` below.
        buf.reserve(end + (64 << 10) - buf.len());
        buf.resize(end, 0);
    }
    buf[..filled].copy_from_slice(carry);
    let mut res = Ok(0);
    while filled < end {
        match reader.read(&mut buf[filled..end]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    buf.truncate(filled);
    if res.is_ok() && filled == end && buf.last().is_some_and(|&b| b != b'\n') {
        res = reader.read_until(b'\n', &mut buf);
    }
    match res {
        Ok(_) => (buf, None),
        Err(e) => {
            let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            buf.truncate(whole);
            (buf, Some(e))
        }
    }
}

fn commit_lines(
    run: &mut Run,
    file: &str,
    out: LinesOut,
    line_no: &mut u64,
    consumed: &mut u64,
) -> Result<Vec<u8>, LakeError> {
    let before = *line_no;
    *line_no += out.lines;
    *consumed += out.consumed;
    run.commit_prepared(file, out.prepared?, before)?;
    Ok(out.chunk)
}

/// CSV with a header row: Log Analytics exports (`Type` column) or network alerts.
fn csv_file(run: &mut Run, file: &str, bytes: &[u8], line_base: u64) -> Result<(), FileError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(trim_bom(bytes));
    let headers = match rdr.byte_headers() {
        Ok(h) => h.iter().map(|h| String::from_utf8_lossy(h).trim().to_string()).collect::<Vec<_>>(),
        Err(e) => return Err(FileError::Read(format!("not JSON and not CSV: {e}"))),
    };
    if headers.len() < 2 {
        // Not a CSV at all (binary garbage, plain text): each line is a rejected record.
        let text = String::from_utf8_lossy(bytes).to_string();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            run.reject(file, Pos::Line(line_base + i as u64 + 1), "not JSON and not CSV", line)?;
        }
        return Ok(());
    }
    let csv_kind = formats::CsvKind::of_headers(&headers);
    let mut rec = csv::ByteRecord::new();
    loop {
        let line = line_base + rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let raw = rec.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>();
                let raw_line = csv_line(&raw);
                if rec.len() != headers.len() {
                    run.reject(
                        file,
                        Pos::Line(line),
                        &format!("CSV row has {} fields, header has {}", rec.len(), headers.len()),
                        &raw_line,
                    )?;
                    continue;
                }
                let mut m = Map::new();
                for (h, v) in headers.iter().zip(raw) {
                    if !v.is_empty() {
                        m.insert(h.clone(), Value::String(v));
                    }
                }
                match formats::map_csv_row(&m, csv_kind, run.format) {
                    Ok(m) => run.place(file, m, &raw_line)?,
                    Err(reason) => run.reject(file, Pos::Line(line), &reason, &raw_line)?,
                }
            }
            Err(e) => {
                run.reject(file, Pos::Line(line), &format!("invalid CSV: {e}"), "")?;
                break;
            }
        }
    }
    Ok(())
}

fn csv_line(fields: &[String]) -> String {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let _ = w.write_record(fields);
    String::from_utf8_lossy(&w.into_inner().unwrap_or_default()).trim_end().to_string()
}

struct CountingReader<R> {
    inner: R,
    /// Bytes read so far.
    n: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        self.bar.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::ArraySplitter;

    /// A reader that hands out at most `step` bytes a call, then fails once at `fail_at` if set.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        fail_at: Option<usize>,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.fail_at == Some(0) {
                self.fail_at = None;
                return Err(std::io::Error::other("cut"));
            }
            let n = buf.len().min(self.step).min(self.data.len()).min(self.fail_at.unwrap_or(usize::MAX));
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.fail_at = self.fail_at.map(|f| f - n);
            Ok(n)
        }
    }

    /// Chunks read into reused buffers (stale bytes past their data, longer or shorter than the
    /// next chunk) are whole lines that add up to the input, the carried bytes first; a read
    /// error keeps the whole lines before it.
    #[test]
    fn chunks_read_into_reused_buffers_are_the_input_in_whole_lines() {
        let input: Vec<u8> =
            (0..300).flat_map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 37)).into_bytes()).collect();
        for (size, step, bufsz) in [(1, 7, 0), (64, 5, 3), (500, 4096, 9000), (1000, 13, 100), (5000, 1 << 20, 0)] {
            let mut reader = std::io::BufReader::with_capacity(16, Trickle { data: &input, step, fail_at: None });
            let (mut got, mut spare, mut carry) = (Vec::new(), vec![0xAAu8; bufsz], b"{\"carried\":1}\n".to_vec());
            let mut want = carry.clone();
            want.extend_from_slice(&input);
            loop {
                let (chunk, err) = super::read_chunk(&mut reader, std::mem::take(&mut spare), &carry, size);
                carry.clear();
                assert!(err.is_none());
                if chunk.is_empty() {
                    break;
                }
                assert_eq!(chunk.last(), Some(&b'\n'), "size {size} step {step}: a chunk ends a line");
                got.extend_from_slice(&chunk);
                spare = chunk;
            }
            assert_eq!(got, want, "size {size} step {step} buffer {bufsz}");
        }
        let mut reader = std::io::BufReader::with_capacity(16, Trickle { data: &input, step: 9, fail_at: Some(100) });
        let (chunk, err) = super::read_chunk(&mut reader, vec![0xAA; 4], &[], 4096);
        assert!(err.is_some());
        let whole = input[..100].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        assert_eq!(chunk, input[..whole].to_vec(), "the whole lines before the error");
    }

    /// A local file's mapped chunks are the chunks `read_chunk` reads from the same byte: whole
    /// lines (a line longer than the mapped tail, several times over, included), the same
    /// boundaries, a last line without its newline, from any start; none at the end.
    #[test]
    fn mapped_chunks_are_the_chunks_read() {
        use super::super::chunks::MappedFile;
        let mut input: Vec<u8> = Vec::new();
        for i in 0..400usize {
            let pad = match i {
                7 => 300_000, // past the 64 KiB tail four times over
                100 => 65_530,
                _ => i * 37 % 2000,
            };
            input.extend_from_slice(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(pad)).as_bytes());
            input.extend_from_slice(if i % 50 == 3 { b"\r\n\n" } else { b"\n" });
        }
        input.extend_from_slice(b"{\"last\":\"no newline\"}");
        let dir = std::env::temp_dir().join(format!("wisp-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lines.json");
        std::fs::write(&path, &input).unwrap();
        let starts = [0, 1, 4095, 4096, 4097, input.iter().position(|&b| b == b'\n').unwrap() + 1];
        for size in [1, 97, 4096, 65_536, 2 << 20, 64 << 20] {
            for &start in &starts {
                let mut reader = std::io::BufReader::with_capacity(16, &input[start..]);
                let mapped = MappedFile::new(std::fs::File::open(&path).unwrap()).unwrap();
                let mut pos = start as u64;
                loop {
                    let (want, err) = super::read_chunk(&mut reader, Vec::new(), &[], size);
                    assert!(err.is_none());
                    let got = mapped.chunk(pos, size).unwrap();
                    if want.is_empty() {
                        assert!(got.is_none(), "size {size} from {start}: a chunk past the end");
                        break;
                    }
                    let got = got.expect("a chunk where one is read");
                    assert!(got.bytes() == want.as_slice(), "size {size} from {start}: chunk at {pos} differs");
                    pos += want.len() as u64;
                }
            }
        }
        // Shared as an Arrow buffer: the same bytes, held after the chunk itself is gone.
        let mapped = MappedFile::new(std::fs::File::open(&path).unwrap()).unwrap();
        let buf = mapped.chunk(5, 1000).unwrap().unwrap().share();
        drop(mapped);
        let end = 5 + input[5 + 999..].iter().position(|&b| b == b'\n').unwrap() + 1000;
        assert_eq!(buf.as_slice(), &input[5..end]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The chunk's lines are `split_inclusive`'s: empty lines, a last line without `\n`, `\r\n`.
    #[test]
    fn lines_of_a_chunk_are_split_inclusive() {
        for chunk in ["", "\n", "a", "a\n", "a\nb", "a\n\nb\n", "\n\n", "{\"x\":1}\r\n{}\n  \nlast"] {
            let got: Vec<&[u8]> = super::lines_of_chunk(chunk.as_bytes()).collect();
            let want: Vec<&[u8]> = chunk.as_bytes().split_inclusive(|&b| b == b'\n').collect();
            assert_eq!(got, want, "{chunk:?}");
        }
    }

    /// Splits `input` fed in chunks of `size` bytes: the elements, and whether the array closed.
    fn split(input: &[u8], size: usize) -> (Vec<String>, bool) {
        let mut got = Vec::new();
        let mut out = |e: &[u8]| -> Result<(), ()> {
            got.push(String::from_utf8(e.to_vec()).unwrap());
            Ok(())
        };
        let mut s = ArraySplitter::default();
        let mut closed = false;
        for chunk in input.chunks(size.max(1)) {
            closed = s.feed(chunk, &mut out).unwrap();
            if closed {
                break;
            }
        }
        s.finish(&mut out).unwrap();
        (got, closed)
    }

    #[test]
    fn records_across_every_buffer_edge() {
        let input = br#"  [ {"a": 1, "b": [1, 2, {"c": "x"}]} , {"d": "e"},
            {"f": null} ]  trailing"#;
        let want = [r#"{"a": 1, "b": [1, 2, {"c": "x"}]}"#, r#"{"d": "e"}"#, r#"{"f": null}"#];
        for size in 1..input.len() + 1 {
            assert_eq!(split(input, size), (want.iter().map(|s| s.to_string()).collect(), true), "chunk {size}");
        }
    }

    #[test]
    fn strings_holding_brackets_commas_and_escapes() {
        let input = br#"[{"s": "a],[b}{,"}, {"q": "say \"hi\", ]"}, {"bs": "c:\\dir\\"}, "plain, string"]"#;
        for size in [1, 2, 3, 7, 64] {
            let (got, closed) = split(input, size);
            assert!(closed);
            assert_eq!(got.len(), 4, "{got:?}");
            assert_eq!(got[0], r#"{"s": "a],[b}{,"}"#);
            assert_eq!(got[1], r#"{"q": "say \"hi\", ]"}"#);
            assert_eq!(got[2], r#"{"bs": "c:\\dir\\"}"#);
            assert_eq!(got[3], r#""plain, string""#);
            for g in &got {
                serde_json::from_str::<serde_json::Value>(g).unwrap();
            }
        }
    }

    #[test]
    fn a_truncated_array_leaves_its_last_element() {
        let (got, closed) = split(br#"[{"a": 1}, {"b": [2, 3"#, 4);
        assert!(!closed);
        assert_eq!(got, vec![r#"{"a": 1}"#.to_string(), r#"{"b": [2, 3"#.to_string()]);
        assert!(serde_json::from_str::<serde_json::Value>(&got[1]).is_err());
        let (got, closed) = split(b"[]", 1);
        assert!(closed && got.is_empty());
        let (got, closed) = split(b"[ , {}, ,]", 3);
        assert!(closed);
        assert_eq!(got, vec!["{}".to_string()]);
    }
}
