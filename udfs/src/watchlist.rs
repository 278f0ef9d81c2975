//! Named IP watchlists loaded from CSV (the Sentinel watchlist export shape).

use crate::db::split_fields;
use crate::ranges::{parse_range, RangeSet};
use std::path::{Path, PathBuf};

/// A watchlist file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WatchlistError {
    #[error("cannot read watchlist {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    Entry { path: PathBuf, line: usize, msg: String },
    #[error("bad watchlist name '{0}': use letters, digits and '_' (it also becomes a table name)")]
    Name(String),
}

/// One loaded watchlist: its entries as written (for the SQL table) and the compiled index.
#[derive(Debug, Clone)]
pub struct Watchlist {
    pub name: String,
    pub path: PathBuf,
    /// `(line, entry)` in file order.
    pub entries: Vec<(usize, String)>,
    pub set: RangeSet,
}

/// Loads a watchlist: a header row, then one entry per row from the `IPOrRange` column (any case)
/// or the first column; blank lines and `#` comments are skipped. Each entry is an address, a
/// CIDR or an `a-b` range; a bad entry is an error naming the file and line.
pub fn load(name: &str, path: impl AsRef<Path>) -> Result<Watchlist, WatchlistError> {
    let path = path.as_ref();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(WatchlistError::Name(name.to_string()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| WatchlistError::Io { path: path.to_path_buf(), source: e })?;
    parse(name, path, &text)
}

/// Parses watchlist text (see [`load`]).
pub fn parse(name: &str, path: &Path, text: &str) -> Result<Watchlist, WatchlistError> {
    let mut col: Option<usize> = None;
    let mut entries = Vec::new();
    let mut ranges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let t = line.trim().trim_start_matches('\u{feff}');
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let fields = split_fields(t);
        let c = match col {
            Some(c) => c,
            None => {
                // First row: a header unless its first field is already an entry.
                if let Some(p) = fields.iter().position(|f| f.eq_ignore_ascii_case("iporrange")) {
                    col = Some(p);
                    continue;
                }
                col = Some(0);
                if parse_range(&fields[0]).is_err() {
                    continue;
                }
                0
            }
        };
        let Some(entry) = fields.get(c).map(|s| s.trim()).filter(|s| !s.is_empty()) else {
            return Err(WatchlistError::Entry { path: path.to_path_buf(), line: lineno, msg: "empty entry".into() });
        };
        let r = parse_range(entry).map_err(|e| WatchlistError::Entry {
            path: path.to_path_buf(),
            line: lineno,
            msg: e.to_string(),
        })?;
        ranges.push(r);
        entries.push((lineno, entry.to_string()));
    }
    Ok(Watchlist { name: name.to_string(), path: path.to_path_buf(), entries, set: RangeSet::new(ranges) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::parse_u128;

    #[test]
    fn sentinel_export_shape() {
        let text =
            "SearchKey,IPOrRange,Comment\n# office\n,10.0.0.0/8,hq\n\n,192.168.1.1-192.168.1.20,vpn\n,2001:db8::1,v6\n";
        let w = parse("NetworkAllowlist", Path::new("a.csv"), text).unwrap();
        assert_eq!(w.entries.len(), 3);
        assert_eq!(w.entries[0], (3, "10.0.0.0/8".to_string()));
        assert!(w.set.contains(parse_u128("192.168.1.20").unwrap()));
        assert!(!w.set.contains(parse_u128("192.168.1.21").unwrap()));
        let bad = parse("x", Path::new("b.csv"), "IPOrRange\n10.0.0.0/8\n10.0.0.0/99\n").unwrap_err();
        assert!(bad.to_string().starts_with("b.csv:3:"), "{bad}");
        let headless = parse("x", Path::new("c.csv"), "1.2.3.4\n5.6.7.8\n").unwrap();
        assert_eq!(headless.entries.len(), 2);
        assert!(load("bad-name", "c.csv").is_err());
    }
}
