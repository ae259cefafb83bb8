//! The line protocol spoken between the library and the `autofs-scenario` init.
//!
//! Every request and every reply is one line of ASCII text terminated by `\n`:
//!
//! ```text
//! request := COMMAND (SP KEY "=" VALUE)*
//! reply   := "ok" (SP KEY "=" VALUE)*
//!          | "error" SP free-text
//! banner  := "ready" (SP KEY "=" VALUE)*      (written once, right after start)
//! ```
//!
//! Keys never contain `=`, values never contain whitespace; values that could (packet
//! bytes, map text, mountinfo) are hex-encoded. Lists are comma-separated. Booleans are
//! `0`/`1`. The same framing is used on the private control socket between the init and
//! each fake daemon. "pid" fields are host pids, "vpid" fields pids in the scenario's
//! pid namespace, `nspid` the full `NSpid:` list (host first).
//!
//! | command | fields | reply fields |
//! |---------|--------|--------------|
//! | (banner) | | `version host_pid nspid mnt_ns pid_ns work_dir` |
//! | `mount` | `[name] mode=indirect\|direct\|offset [uid] [gid] [minproto] [timeout] [strictexpire] [close_write] [nested] [aside] [write_fd] [source]` | `name mode nested aside host_pid vpid nspid host_pgrp vpgrp ns_pgrp read_fd write_fd write_closed mount_point mount_id pipe_ino` (with `aside`: also `owner_host_pid middle_host_pid mnt_ns`) |
//! | `trigger` | `name [path] [outside]` | `id host_pid vpid nspid path` |
//! | `wait-requester` | `id [timeout_ms]` | `state=running\|exited\|signaled [errno] [signal]` |
//! | `read-packet` | `name [timeout_ms] [answer=fail\|ready\|none]` | `len hex answered` + decoded `proto_version type token dev ino uid gid pid tgid name_hex` |
//! | `close-write`, `close-read` | `name` | |
//! | `bind-subdir` | `name sub target_hex [detach]` (the daemon makes `sub` in its root, binds it onto the target; `detach=1` then detaches its mount) | |
//! | `bind-root` | `name target_hex` (the daemon binds its mount's root onto the target, made first) | `mount_id` (of the bind) |
//! | `cover` | `name target_hex` (the daemon mounts a tmpfs on the target, e.g. its mount point or a bind of it) | `mount_id` (of the tmpfs) |
//! | `exit-daemon` | `name` | (after the daemon is reaped) |
//! | `kill` | `name [signal=9] [wait=1]` | |
//! | `delegate` | `name` | `name host_pid vpid nspid host_pgrp read_fd` |
//! | `automount` | `[name] [timeout=60] [map_hex] [binary]`, or `name restart=1` (the gone automount `name` again, same master map) | `name host_pid vpid host_pgrp vpgrp mount_point mount_id log master map` |
//! | `umount` | `name` | |
//! | `mountinfo` | `[name]` (a nested daemon: read from its pid ns) | `hex` |
//! | `ping` | | |
//! | `quit` | | (then the init exits; EOF on stdin does the same) |

use std::fmt::Write as _;

/// Version announced in the `ready` banner; the library refuses other versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// Parsed `key=value` fields of a request or reply line, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The value of `key`, if present (the first occurrence wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming the missing key.
    ///
    /// # Errors
    ///
    /// An error `missing field` naming `key` when it is absent.
    pub fn req(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    /// `key` parsed with [`str::parse`], or an error.
    ///
    /// # Errors
    ///
    /// That of [`Self::req`] when `key` is absent, or an error quoting the value when it does not
    /// parse as `T`.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let v = self.req(key)?;
        v.parse()
            .map_err(|_| format!("field `{key}` has an invalid value `{v}`"))
    }

    /// `key` parsed if present; `Ok(None)` when absent.
    ///
    /// # Errors
    ///
    /// An error quoting the value when `key` is present but does not parse as `T`.
    pub fn parse_opt<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.parse(key).map(Some),
        }
    }

    /// A boolean flag: `1`/`true` is true, absent/`0`/`false` is false.
    ///
    /// # Errors
    ///
    /// An error quoting the value when it is anything else.
    pub fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None | Some("0") | Some("false") => Ok(false),
            Some("1") | Some("true") => Ok(true),
            Some(v) => Err(format!("field `{key}` must be 0 or 1, not `{v}`")),
        }
    }

    /// A comma-separated list of integers (e.g. `nspid=812,5`).
    ///
    /// # Errors
    ///
    /// That of [`Self::req`] when `key` is absent, or an error quoting the first item that is not
    /// an `i32` (empty items are skipped).
    pub fn int_list(&self, key: &str) -> Result<Vec<i32>, String> {
        self.req(key)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("field `{key}` has an invalid list item `{s}`"))
            })
            .collect()
    }

    /// Appends `key=value`.
    pub fn push(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.0.push((key.to_string(), value.to_string()));
        self
    }

    /// Renders ` key=value key=value` (with a leading space per field).
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.0 {
            let _ = write!(s, " {k}={v}");
        }
        s
    }
}

/// Splits a line into its first word (command or `ok`/`error`/`ready`) and its fields.
///
/// For an `error` line the rest of the line is returned as a single field `message`.
///
/// # Errors
///
/// `empty line` when the line (without its line ending) is empty or starts with a space, or an
/// error quoting the first token after the head that is not `key=value`.
pub fn parse_line(line: &str) -> Result<(String, Fields), String> {
    let line = line.trim_end_matches(['\n', '\r']);
    let (head, rest) = match line.split_once(' ') {
        Some((h, r)) => (h, r),
        None => (line, ""),
    };
    if head.is_empty() {
        return Err("empty line".into());
    }
    let mut fields = Fields::default();
    if head == "error" {
        fields.push("message", rest);
        return Ok((head.to_string(), fields));
    }
    for tok in rest.split_whitespace() {
        let (k, v) = tok
            .split_once('=')
            .ok_or_else(|| format!("token `{tok}` is not key=value"))?;
        fields.push(k, v);
    }
    Ok((head.to_string(), fields))
}

/// Checks that a value can be sent unencoded (no whitespace, not empty).
///
/// # Errors
///
/// An error naming `what` and quoting `value` when it is empty or holds whitespace or a control
/// character.
pub fn check_plain(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} `{value}` must be non-empty and contain no whitespace"
        ));
    }
    Ok(())
}

/// Lower-case hex encoding.
pub fn hex_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes [`hex_encode`] output.
///
/// # Errors
///
/// `odd-length hex string` when `s` has an odd number of bytes, or an error giving the offset of
/// the first pair that is not two hex digits.
pub fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err("odd-length hex string".into());
    }
    bytes
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            // Two hex digits (from_str_radix alone would also take a sign, `+1`).
            std::str::from_utf8(pair)
                .ok()
                .filter(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("bad hex at offset {}", 2 * i))
        })
        .collect()
}

/// Renders a list of integers as `a,b,c`.
pub fn int_list(v: &[i32]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ok_and_error_lines() {
        let (h, f) = parse_line("ok a=1 nspid=3,4\n").unwrap();
        assert_eq!(h, "ok");
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.int_list("nspid").unwrap(), vec![3, 4]);
        let (h, f) = parse_line("error no such daemon `x`").unwrap();
        assert_eq!(h, "error");
        assert_eq!(f.get("message"), Some("no such daemon `x`"));
    }

    #[test]
    fn hex_round_trips() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex_decode(&hex_encode(&b)).unwrap(), b);
        assert!(hex_decode("abc").is_err());
        // A character that straddles a pair is an error, not a panic.
        assert_eq!(hex_decode("aé1").unwrap_err(), "bad hex at offset 0");
        assert_eq!(hex_decode("+1ab").unwrap_err(), "bad hex at offset 0");
    }
}
