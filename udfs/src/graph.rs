//! `graph_path_template(uri)`: a Microsoft Graph request URI reduced to the action it performs —
//! the path without scheme, host, query and fragment, its ids written `{id}`. Hunts group Graph
//! activity by it ("which principals call `GET /v1.0/users/{id}/messages` from many addresses").
//!
//! The result is exactly that of this chain of regular expressions (Rust `regex` semantics, as
//! DataFusion's `regexp_replace`), which is how a query without the function writes it:
//!
//! ```sql
//! regexp_replace(regexp_replace(regexp_replace(regexp_replace(
//!     regexp_replace(regexp_replace(uri, '^[a-zA-Z]+://[^/]+', ''), '[?#].*$', ''),
//!     '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '{id}', 'g'),
//!     '[^/(''=]*@[^/)'']*', '{id}', 'g'),
//!     '/(?:[A-Za-z_=+-]*[0-9]){2}[A-Za-z0-9_=+-]{6,}', '/{id}', 'g'),
//!     '/[0-9]+(/|$)', '/{id}${1}', 'g')
//! ```
//!
//! (GUIDs; UPNs and mail addresses, `users/alice@contoso.com` or `users('bob@x.org')`; opaque
//! keys such as message ids, a segment of at least two digits and six more characters after the
//! second; numbers.) Written as one pass per step over bytes instead of six regex scans: on the
//! rare-action hunt's 30 days of Graph activity the chain was its costliest expression. Every
//! step's boundaries are ASCII characters, so working on bytes never splits a UTF-8 character.
//! The tests compare the two on tens of thousands of generated URIs.

use crate::functions::{all_scalar, finish, for_each_str, is_string, plain_udf};
use arrow::array::StringBuilder;
use arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};
use std::sync::Arc;

plain_udf!(
    /// The SQL function: one string argument (any string type), a string (NULL for NULL).
    GraphPathTemplate
);

impl ScalarUDFImpl for GraphPathTemplate {
    fn name(&self) -> &str {
        "graph_path_template"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] if is_string(t) => Ok(arg_types.to_vec()),
            [t] => plan_err!("graph_path_template(): its argument must be a string (a request URI), got {t}"),
            _ => plan_err!("graph_path_template() takes 1 argument (a request URI), got {}", arg_types.len()),
        }
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let n = if scalar { 1 } else { args.number_rows };
        let arr = args.args[0].to_array(n)?;
        let mut b = StringBuilder::with_capacity(n, n * 32);
        let (mut t, mut out) = (PathTemplater::default(), String::new());
        for_each_str(&arr, |v| match v {
            Some(uri) => {
                t.template(uri, &mut out);
                b.append_value(&out);
            }
            None => b.append_null(),
        })?;
        finish(Arc::new(b.finish()), scalar)
    }
}

/// Computes templates, reusing its buffers from one URI to the next.
#[derive(Debug, Default)]
pub struct PathTemplater {
    a: String,
    b: String,
}

impl PathTemplater {
    /// Writes the template of `uri` into `out` (cleared first).
    pub fn template(&mut self, uri: &str, out: &mut String) {
        out.clear();
        let path = strip_query(strip_origin(uri));
        // Steps 3 to 6 each read the previous step's text; two buffers alternate.
        self.a.clear();
        replace_guids(path, &mut self.a);
        self.b.clear();
        replace_addresses(&self.a, &mut self.b);
        self.a.clear();
        replace_keys(&self.b, &mut self.a);
        replace_numbers(&self.a, out);
    }
}

fn is_special(s: &str, i: usize, set: &[u8]) -> bool {
    set.contains(&s.as_bytes()[i])
}

/// `^[a-zA-Z]+://[^/]+` removed.
fn strip_origin(s: &str) -> &str {
    let b = s.as_bytes();
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    if letters == 0 || !b[letters..].starts_with(b"://") {
        return s;
    }
    let host = letters + 3;
    let end = b[host..].iter().position(|&c| c == b'/').map_or(b.len(), |p| host + p);
    if end == host {
        return s;
    }
    &s[end..]
}

/// `[?#].*$` removed: from the first `?` or `#` that no newline follows (`.` stops at one).
fn strip_query(s: &str) -> &str {
    let b = s.as_bytes();
    let from = b.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
    match b[from..].iter().position(|&c| c == b'?' || c == b'#') {
        Some(p) => &s[..from + p],
        None => s,
    }
}

fn is_guid_at(b: &[u8], i: usize) -> bool {
    if b.len() < i + 36 {
        return false;
    }
    b[i..i + 36].iter().enumerate().all(|(k, &c)| match k {
        8 | 13 | 18 | 23 => c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

/// Every GUID (8-4-4-4-12 hex digits, anywhere) as `{id}`.
fn replace_guids(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let (mut i, mut copied) = (0, 0);
    while i + 36 <= b.len() {
        if is_guid_at(b, i) {
            out.push_str(&s[copied..i]);
            out.push_str("{id}");
            i += 36;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[copied..]);
}

/// `[^/('=]*@[^/)']*` as `{id}`, every match: from where the search stands, the longest run
/// without `/ ( ' =` up to its last `@`, then up to the next `/ ) '`.
fn replace_addresses(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let mut pos = 0;
    while pos < b.len() {
        let run_end = (pos..b.len()).find(|&i| is_special(s, i, b"/('=")).unwrap_or(b.len());
        match (pos..run_end).rev().find(|&i| b[i] == b'@') {
            Some(at) => {
                let end = (at + 1..b.len()).find(|&i| is_special(s, i, b"/)'")).unwrap_or(b.len());
                out.push_str("{id}");
                pos = end;
            }
            None => {
                // No match starts in the run nor at its end (a character of the class it
                // stops at cannot begin one): copy both.
                let next = (run_end + 1).min(b.len());
                out.push_str(&s[pos..next]);
                pos = next;
            }
        }
    }
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'=' | b'+' | b'-')
}

/// `/(?:[A-Za-z_=+-]*[0-9]){2}[A-Za-z0-9_=+-]{6,}` as `/{id}`: a `/` and the run of key
/// characters after it, when the run has a second digit and at least six characters after it.
fn replace_keys(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let mut pos = 0;
    while let Some(k) = (pos..b.len()).find(|&i| b[i] == b'/') {
        out.push_str(&s[pos..k]);
        let run_end = (k + 1..b.len()).find(|&i| !is_key_char(b[i])).unwrap_or(b.len());
        let second_digit = (k + 1..run_end).filter(|&i| b[i].is_ascii_digit()).nth(1);
        match second_digit {
            Some(d) if run_end - (d + 1) >= 6 => {
                out.push_str("/{id}");
                pos = run_end;
            }
            _ => {
                out.push('/');
                pos = k + 1;
            }
        }
    }
    out.push_str(&s[pos..]);
}

/// `/[0-9]+(/|$)` as `/{id}` and the `/` it ended with: a match that takes the next `/` leaves
/// it out of the next search (`/1/2` gives `/{id}/2`).
fn replace_numbers(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let mut pos = 0;
    while let Some(k) = (pos..b.len()).find(|&i| b[i] == b'/') {
        out.push_str(&s[pos..k]);
        let digits_end = (k + 1..b.len()).find(|&i| !b[i].is_ascii_digit()).unwrap_or(b.len());
        if digits_end > k + 1 && digits_end == b.len() {
            out.push_str("/{id}");
            pos = digits_end;
        } else if digits_end > k + 1 && b[digits_end] == b'/' {
            out.push_str("/{id}/");
            pos = digits_end + 1;
        } else {
            out.push('/');
            pos = k + 1;
        }
    }
    out.push_str(&s[pos..]);
}

#[cfg(test)]
mod tests {
    use super::PathTemplater;
    use regex::Regex;

    /// The chain as DataFusion's `regexp_replace` runs it (no flag: the first match; 'g': all).
    struct Chain(Vec<(Regex, &'static str, bool)>);

    impl Chain {
        fn new() -> Self {
            let steps = [
                ("^[a-zA-Z]+://[^/]+", "", false),
                ("[?#].*$", "", false),
                ("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "{id}", true),
                ("[^/('=]*@[^/)']*", "{id}", true),
                ("/(?:[A-Za-z_=+-]*[0-9]){2}[A-Za-z0-9_=+-]{6,}", "/{id}", true),
                ("/[0-9]+(/|$)", "/{id}${1}", true),
            ];
            Chain(steps.iter().map(|(p, r, g)| (Regex::new(p).unwrap(), *r, *g)).collect())
        }
        fn apply(&self, s: &str) -> String {
            self.apply_counting(s, &mut [0; 6])
        }
        /// Also counts, per step, the inputs it changed.
        fn apply_counting(&self, s: &str, changed: &mut [usize; 6]) -> String {
            let mut s = s.to_string();
            for (step, (re, rep, global)) in self.0.iter().enumerate() {
                let next = if *global { re.replace_all(&s, *rep) } else { re.replace(&s, *rep) }.into_owned();
                changed[step] += usize::from(next != s);
                s = next;
            }
            s
        }
    }

    fn template(s: &str) -> String {
        let mut out = String::new();
        PathTemplater::default().template(s, &mut out);
        out
    }

    #[test]
    fn graph_uris_become_their_action() {
        let cases = [
            (
                "https://graph.microsoft.com/v1.0/users/6f1c2a9e-0b7d-4c55-9e3a-1d2b3c4d5e6f/messages?$top=10",
                "/v1.0/users/{id}/messages",
            ),
            (
                "https://graph.microsoft.com/v1.0/users/alice@contoso.com/mailFolders/inbox",
                "/v1.0/users/{id}/mailFolders/inbox",
            ),
            ("https://graph.microsoft.com/v1.0/users('bob@x.org')/drive", "/v1.0/users('{id}')/drive"),
            ("https://graph.microsoft.com/v1.0/me/messages/AAMkAGI2TG93AAAAAA=#frag", "/v1.0/me/messages/{id}"),
            ("https://graph.microsoft.com/beta/groups/123/members/45", "/beta/groups/{id}/members/{id}"),
            ("/v1.0/applications", "/v1.0/applications"),
            ("", ""),
        ];
        let chain = Chain::new();
        for (uri, want) in cases {
            assert_eq!(template(uri), want, "{uri}");
            assert_eq!(chain.apply(uri), want, "{uri}");
        }
    }

    /// Tens of thousands of URIs built from the characters and pieces each step turns on,
    /// compared with the regex chain.
    #[test]
    fn equals_the_regex_chain_on_generated_uris() {
        let pieces: &[&str] = &[
            "/",
            "/",
            "/",
            "(",
            ")",
            "'",
            "=",
            "@",
            "?",
            "#",
            "\n",
            "a",
            "Zz",
            "0",
            "7",
            "12",
            "-",
            "_",
            "+",
            ":",
            "{",
            "}",
            ".",
            "é",
            "€",
            "https://",
            "http://graph.microsoft.com",
            "ftp:/",
            "://",
            "x://h",
            "6f1c2a9e-0b7d-4c55-9e3a-1d2b3c4d5e6f",
            "6F1C2A9E-0B7D-4C55-9E3A-1D2B3C4D5E6",
            "abcdef",
            "AAMkAGI2",
            "k2G93AAAAAA=",
            "users",
            "v1.0",
            "alice@contoso.com",
            "1/",
            "/9",
            " ",
        ];
        let chain = Chain::new();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut changed = [0; 6];
        for n in 0..60_000 {
            let len = (next() % 14) as usize + (n % 3);
            let uri: String = (0..len).map(|_| pieces[(next() % pieces.len() as u64) as usize]).collect();
            assert_eq!(template(&uri), chain.apply_counting(&uri, &mut changed), "uri {uri:?}");
        }
        // Every step had work to do on many of them (the corpus exercises each).
        assert!(changed.iter().all(|&c| c > 2_000), "inputs changed per step: {changed:?}");
    }
}
