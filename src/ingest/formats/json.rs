//! A JSON reader for the typed reader's lines: a `serde` deserializer over borrowed text that
//! accepts exactly what `serde_json::from_str` accepts and gives the same values, faster on the
//! shapes exports have (short keys and GUIDs, few escapes).
//!
//! Where the time goes in `serde_json` on these lines is finding the end of each string (a
//! byte-wise loop over 8-byte words, then byte by byte for the last few: `skip_to_escape` was 9%
//! of an ingest's instructions). Here 16 bytes are tested at a time with SSE2 (always present on
//! x86_64). What is rare is handed to `serde_json` itself, so it cannot differ: a string with
//! escapes is decoded by it, and any number other than a plain non-negative integer that fits in
//! a `u64` is parsed by it.
//!
//! The grammar is `serde_json`'s, including its leniencies and limits: a value skipped as
//! [`IgnoredAny`](serde::de::IgnoredAny) is checked as `serde_json` checks it (escapes well formed
//! but `\u` surrogates unpaired allowed, numbers by their grammar only, any depth), a value
//! deserialized may nest 127 deep, keys are strings, no trailing commas, only whitespace after the
//! top-level value. Errors carry no position: the typed reader gives up on any error and the
//! general path (which uses `serde_json`) reads the line and says what is wrong with it.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Why a line was not read (the typed reader only needs to know that it was not).
#[derive(Debug)]
pub struct Bad;

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("not read by the typed JSON reader")
    }
}

impl std::error::Error for Bad {}

impl de::Error for Bad {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Bad
    }
}

type Result<T> = std::result::Result<T, Bad>;

/// `serde_json::from_str` for the typed reader: the whole text is one value, then whitespace.
pub fn from_str<'de, T: de::Deserialize<'de>>(text: &'de str) -> Result<T> {
    from_str_seed(text, std::marker::PhantomData::<T>)
}

/// [`from_str`] through a seed (a value read into a place made for it, not returned and moved).
pub fn from_str_seed<'de, S: DeserializeSeed<'de>>(text: &'de str, seed: S) -> Result<S::Value> {
    let mut p = Parser { text, s: text.as_bytes(), i: 0, depth: 128 };
    let value = seed.deserialize(&mut p)?;
    p.ws();
    if p.i == p.s.len() {
        Ok(value)
    } else {
        Err(Bad)
    }
}

pub struct Parser<'de> {
    text: &'de str,
    s: &'de [u8],
    i: usize,
    /// `serde_json`'s `remaining_depth`: an error when an object or array entered brings it to 0.
    depth: u8,
}

/// The index of the first `"`, `\` or control byte at or after `i` (or the length).
#[inline]
fn string_stop(s: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; each load reads 16 bytes inside `s` (i + 16 <= len).
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            while i + 16 <= s.len() {
                let x = _mm_loadu_si128(s.as_ptr().add(i) as *const __m128i);
                let hit = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                    // x <= 0x1f, unsigned: min(x, 0x1f) == x.
                    _mm_cmpeq_epi8(_mm_min_epu8(x, control), x),
                );
                let bits = _mm_movemask_epi8(hit) as u32;
                if bits != 0 {
                    return i + bits.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    while i < s.len() {
        let b = s[i];
        if b == b'"' || b == b'\\' || b < 0x20 {
            return i;
        }
        i += 1;
    }
    s.len()
}

/// A string's text: a slice of the input, or decoded (it had escapes).
enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Parser<'de> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&b) = self.s.get(self.i) {
            if matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek_ws(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    /// Past the string whose opening quote is at `self.i`; true when it had escapes. Escapes are
    /// checked as `serde_json`'s `ignore_escape` checks them.
    #[inline(always)]
    fn skip_string(&mut self) -> Result<bool> {
        let mut i = self.i + 1;
        let mut escaped = false;
        loop {
            i = string_stop(self.s, i);
            match self.s.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.s.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            let hex = self.s.get(i + 2..i + 6).ok_or(Bad)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Bad);
                            }
                            i += 6;
                        }
                        _ => return Err(Bad),
                    }
                }
                // A control character, or the end of the input.
                _ => return Err(Bad),
            }
        }
    }

    /// The string at `self.i` (its opening quote), as `serde_json`'s `parse_str` gives it.
    fn string(&mut self) -> Result<Text<'de>> {
        let start = self.i;
        if self.skip_string()? {
            // Escapes: decoded by serde_json (a lone surrogate is an error there, as here).
            let quoted = &self.text[start..self.i];
            serde_json::from_str::<String>(quoted).map(Text::Owned).map_err(|_| Bad)
        } else {
            // SAFETY: `start` and `self.i - 1` are the string's quotes, in the text: ASCII bytes of
            // valid UTF-8, so the bytes between them begin and end on char boundaries.
            Ok(Text::Borrowed(unsafe { self.text.get_unchecked(start + 1..self.i - 1) }))
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bad)
        }
    }

    /// Past a number starting at `self.i`, by `serde_json`'s grammar (`ignore_integer`).
    fn skip_number(&mut self) -> Result<()> {
        let s = self.s;
        let digit = |i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
        let mut i = self.i;
        if s.get(i) == Some(&b'-') {
            i += 1;
        }
        match s.get(i) {
            Some(b'0') => {
                i += 1;
                if digit(i) {
                    return Err(Bad);
                }
            }
            Some(b'1'..=b'9') => {
                while digit(i) {
                    i += 1;
                }
            }
            _ => return Err(Bad),
        }
        if s.get(i) == Some(&b'.') {
            i += 1;
            if !digit(i) {
                return Err(Bad);
            }
            while digit(i) {
                i += 1;
            }
        }
        if matches!(s.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(s.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digit(i) {
                return Err(Bad);
            }
            while digit(i) {
                i += 1;
            }
        }
        self.i = i;
        Ok(())
    }

    /// A number deserialized: a plain non-negative integer that fits in a u64 here, anything
    /// else by `serde_json` (its integer, negative or float value, or its error).
    fn number<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let start = self.i;
        let s = self.s;
        let mut i = start;
        let mut n: u64 = 0;
        let mut plain = matches!(s.get(i), Some(b'1'..=b'9'))
            || (s.get(i) == Some(&b'0') && !s.get(i + 1).is_some_and(u8::is_ascii_digit));
        while plain {
            match s.get(i) {
                Some(&b @ b'0'..=b'9') => {
                    match n.checked_mul(10).and_then(|n| n.checked_add(u64::from(b - b'0'))) {
                        Some(m) => n = m,
                        None => plain = false,
                    }
                    i += 1;
                }
                Some(b'.' | b'e' | b'E') => plain = false,
                _ => break,
            }
        }
        if plain {
            self.i = i;
            return visitor.visit_u64(n);
        }
        self.skip_number()?;
        let number: serde_json::Number = serde_json::from_str(&self.text[start..self.i]).map_err(|_| Bad)?;
        if let Some(n) = number.as_u64() {
            visitor.visit_u64(n)
        } else if let Some(n) = number.as_i64() {
            visitor.visit_i64(n)
        } else {
            visitor.visit_f64(number.as_f64().ok_or(Bad)?)
        }
    }

    /// Past one value, checked as `serde_json`'s `ignore_value` checks it (no depth limit).
    fn skip_value(&mut self) -> Result<()> {
        // The containers entered and not yet left: true for an object.
        let mut open: Vec<bool> = Vec::new();
        loop {
            // A value.
            match self.peek_ws().ok_or(Bad)? {
                b'"' => {
                    self.skip_string()?;
                }
                b'n' => self.literal(b"null")?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'-' | b'0'..=b'9' => self.skip_number()?,
                c @ (b'[' | b'{') => {
                    self.i += 1;
                    let object = c == b'{';
                    match self.peek_ws() {
                        Some(b']') if !object => self.i += 1,
                        Some(b'}') if object => self.i += 1,
                        _ => {
                            open.push(object);
                            if object {
                                self.key_colon()?;
                            }
                            continue;
                        }
                    }
                }
                _ => return Err(Bad),
            }
            // After a value: a comma and the next entry, or the ends of containers.
            loop {
                let Some(&object) = open.last() else { return Ok(()) };
                match self.peek_ws().ok_or(Bad)? {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.key_colon()?;
                        }
                        break;
                    }
                    b']' if !object => {
                        self.i += 1;
                        open.pop();
                    }
                    b'}' if object => {
                        self.i += 1;
                        open.pop();
                    }
                    _ => return Err(Bad),
                }
            }
        }
    }

    /// A skipped object's key and its colon.
    fn key_colon(&mut self) -> Result<()> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(Bad);
        }
        self.skip_string()?;
        if self.peek_ws() != Some(b':') {
            return Err(Bad);
        }
        self.i += 1;
        Ok(())
    }

    fn enter(&mut self) -> Result<()> {
        self.depth -= 1;
        if self.depth == 0 {
            return Err(Bad);
        }
        self.i += 1;
        Ok(())
    }

    /// Past the `}` or `]` that ends the object or array just read: the visitor read every entry
    /// (`serde_json`'s `end_map` / `end_seq`).
    fn leave(&mut self, end: u8) -> Result<()> {
        self.depth += 1;
        if self.peek_ws() != Some(end) {
            return Err(Bad);
        }
        self.i += 1;
        Ok(())
    }

    fn visit_map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_map(Entries { p: self, first: true })?;
        self.leave(b'}')?;
        Ok(value)
    }

    fn visit_seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_seq(Entries { p: self, first: true })?;
        self.leave(b']')?;
        Ok(value)
    }
}

impl<'de> Deserializer<'de> for &mut Parser<'de> {
    type Error = Bad;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek_ws().ok_or(Bad)? {
            b'"' => match self.string()? {
                Text::Borrowed(s) => visitor.visit_borrowed_str(s),
                Text::Owned(s) => visitor.visit_string(s),
            },
            b'{' => self.visit_map(visitor),
            b'[' => self.visit_seq(visitor),
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'-' | b'0'..=b'9' => self.number(visitor),
            _ => Err(Bad),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek_ws() {
            Some(b'{') => self.visit_map(visitor),
            _ => Err(Bad),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek_ws() == Some(b'n') {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip_value()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct struct enum identifier
    }
}

/// The entries of an object or the items of an array being read.
struct Entries<'a, 'de> {
    p: &'a mut Parser<'de>,
    first: bool,
}

impl Entries<'_, '_> {
    /// Whether another entry follows (`serde_json`'s `has_next_key` / `has_next_element`):
    /// the first right away, later ones after a comma; a comma before the end is an error.
    fn more(&mut self, end: u8) -> Result<bool> {
        let mut c = self.p.peek_ws().ok_or(Bad)?;
        if c == end {
            return Ok(false);
        }
        if self.first {
            self.first = false;
        } else if c == b',' {
            self.p.i += 1;
            c = self.p.peek_ws().ok_or(Bad)?;
            if c == end {
                return Err(Bad);
            }
        } else {
            return Err(Bad);
        }
        Ok(true)
    }
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = Bad;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.more(b'}')? {
            return Ok(None);
        }
        if self.p.s.get(self.p.i) != Some(&b'"') {
            return Err(Bad);
        }
        seed.deserialize(Key(&mut *self.p)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        if self.p.peek_ws() != Some(b':') {
            return Err(Bad);
        }
        self.p.i += 1;
        seed.deserialize(&mut *self.p)
    }
}

impl<'de> SeqAccess<'de> for Entries<'_, 'de> {
    type Error = Bad;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.more(b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.p).map(Some)
    }
}

/// An object's key: a string, whatever type is asked of it.
struct Key<'a, 'de>(&'a mut Parser<'de>);

impl<'de> Deserializer<'de> for Key<'_, 'de> {
    type Error = Bad;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0.string()? {
            Text::Borrowed(s) => visitor.visit_borrowed_str(s),
            Text::Owned(s) => visitor.visit_string(s),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;
    use serde_json::Value;

    /// Both readers on one text: the same value, or both an error.
    fn same(text: &str) {
        let ours = from_str::<Value>(text).ok();
        let theirs = serde_json::from_str::<Value>(text).ok();
        assert_eq!(ours, theirs, "Value of {text:?}");
        let ours = from_str::<IgnoredAny>(text).is_ok();
        let theirs = serde_json::from_str::<IgnoredAny>(text).is_ok();
        assert_eq!(ours, theirs, "IgnoredAny of {text:?}");
    }

    const SIGNIN: &str = r#"{"time":"2026-11-19T10:56:07.5528720Z","resourceId":"/tenants/7c1f2b1e-0000-4000-8000-00000000c0de/providers/Microsoft.aadiam","operationName":"Sign-in activity","category":"ServicePrincipalSignInLogs","tenantId":"7c1f2b1e-0000-4000-8000-00000000c0de","resultType":"0","callerIpAddress":"11.4.120.85","properties":{"id":"bab62de6-5ba5-4515-8ae9-22a13d571991","createdDateTime":"2026-11-19T10:56:07.5528720Z","appId":"732a458d-b567-4936-83ea-dfc7d6dce686","ipAddress":"11.4.120.85","status":{"errorCode":0,"failureReason":null},"location":{"city":"","countryOrRegion":"US"},"isInteractive":false,"servicePrincipalName":"svc-payroll-0","roles":["a",1,-2,3.5,true,null,[],{}],"n":[-0,0.0,1e3,1E-2,-1.5e+300,18446744073709551615,18446744073709551616,-9223372036854775808,-9223372036854775809]}}"#;

    #[test]
    fn agrees_with_serde_json_on_valid_and_invalid_text() {
        for text in [
            SIGNIN,
            " { } ",
            "[]",
            "[1,2]",
            "\"a\\u00e9\\ud83d\\ude00\\n\\\"\"",
            "\"\\ud800\"",
            "[\"\\ud800\"]",
            "{\"a\":\"\\ud800\"}",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"tab\there\"",
            "\"unterminated",
            "{\"a\":1,}",
            "[1,]",
            "[,1]",
            "{,}",
            "{\"a\" 1}",
            "{\"a\":1 \"b\":2}",
            "{1:2}",
            "{\"a\":1}}",
            "{\"a\":1} x",
            "{\"a\":1}\n\r\t ",
            "01",
            "-",
            "-01",
            "1.",
            "1.e5",
            "1e",
            "1e+",
            "1e400",
            "-1e400",
            "123456789012345678901234567890",
            "0",
            "-0",
            "nul",
            "nullx",
            "truex",
            "[true,false,null]",
            "{\"\\u0061\":1,\"a\":2}",
            "{\"k\\\"\":{\"x\":[{\"y\":\"é ü 中文 🙂\"}]}}",
            "",
            "   ",
            "\u{feff}{}",
        ] {
            same(text);
        }
    }

    #[test]
    fn depth_limits_are_serde_jsons() {
        for depth in [126, 127, 128, 129, 300] {
            same(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            same(&format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)));
        }
    }

    #[test]
    fn strings_of_every_length_and_stop_position_are_found() {
        // The 16-byte scan and the byte loop after it, for each kind of stop at each position.
        for len in 0..40 {
            for stop in ["\"", "\\n\"", "\\u0041\"", "\u{1}\""] {
                let body: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
                same(&format!("\"{body}{stop}"));
                same(&format!("[\"{body}{stop},1]"));
                same(&format!("{{\"{body}{stop}:\"{body}\"}}"));
            }
        }
    }

    #[test]
    fn mutated_records_agree_with_serde_json() {
        // Every single-byte deletion and a set of byte replacements of a record that has every
        // kind of value: both readers accept the same texts with the same values.
        let bytes = SIGNIN.as_bytes();
        let mut tried = 0;
        for at in 0..bytes.len() {
            let mut cut = bytes.to_vec();
            cut.remove(at);
            if let Ok(text) = std::str::from_utf8(&cut) {
                same(text);
                tried += 1;
            }
            for b in [b'"', b'\\', b',', b':', b'}', b']', b'{', b'[', b' ', b'0', b'-', b'e', b'.', 0x01] {
                let mut edited = bytes.to_vec();
                edited[at] = b;
                if let Ok(text) = std::str::from_utf8(&edited) {
                    same(text);
                    tried += 1;
                }
            }
        }
        assert!(tried > 10_000);
    }
}
