//! Linux paths, process names and cgroup paths are bytes, not UTF-8. The core keeps them as
//! bytes; where a `string` is needed (proto3 strings, JSON, metric labels, the table, messages)
//! they are written with one lossless convention:
//!
//! - every valid UTF-8 sequence is kept as it is, except the backslash;
//! - a backslash is written `\\`;
//! - every byte that is not part of a valid UTF-8 sequence is written `\xHH` (two lowercase hex
//!   digits).
//!
//! So `/mnt/caf\xe9` (Latin-1 `é`) reads `/mnt/caf\xe9`, `/mnt/café` (UTF-8) reads `/mnt/café`,
//! and [`unescape`] gives back the exact bytes of any escaped string.

use std::fmt::Write as _;

/// The lossless string form of `bytes` (see the module documentation).
pub fn escape(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes)
        && !text.contains('\\')
    {
        return text.to_owned();
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The exact bytes of a string written by [`escape`]. `None` when `text` is not such a string
/// (a lone backslash, or `\x` without two hex digits).
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = std::str::from_utf8(bytes.get(i + 2..i + 4)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_utf8_is_kept_and_invalid_bytes_become_hex_escapes() {
        assert_eq!(escape("/mnt/café".as_bytes()), "/mnt/café");
        assert_eq!(escape(b"/mnt/caf\xe9"), "/mnt/caf\\xe9");
        assert_eq!(escape(b"a\\b"), "a\\\\b");
        assert_eq!(escape(b"\xff\xfe"), "\\xff\\xfe");
        // A UTF-8 character cut in the middle (comm is truncated at 15 bytes).
        assert_eq!(escape(b"daemon-\xc3"), "daemon-\\xc3");
    }

    #[test]
    fn escaping_is_lossless() {
        let samples: [&[u8]; 6] = [
            b"",
            b"/plain",
            b"/caf\xe9/\\x41",
            "/ünï/\\\\".as_bytes(),
            b"\x80\x81\xc3\x28",
            b"tab\tnew\nline",
        ];
        for s in samples {
            assert_eq!(unescape(&escape(s)).as_deref(), Some(s), "{s:?}");
        }
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&every_byte)), Some(every_byte));
    }

    #[test]
    fn unescape_rejects_what_escape_never_writes() {
        assert_eq!(unescape("a\\"), None);
        assert_eq!(unescape("a\\q"), None);
        assert_eq!(unescape("a\\x4"), None);
        assert_eq!(unescape("a\\xzz"), None);
    }
}
