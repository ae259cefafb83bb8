//! Parsing of `/proc/<pid>/mountinfo` lines (proc(5)) as bytes, with octal unescaping and
//! errors that name the offending token. Paths are kept as exact bytes: Linux paths need not be
//! UTF-8, and one byte that is not must not sink a line, let alone the table. Lines of any
//! length are accepted (what CRIU's 1024-byte re-read after its probe makes of them is
//! [`crate::revisit`]'s).

use crate::escape::escape;
use crate::proc_root::parse_decimal;

/// One parsed mountinfo line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Field 1: unique mount id.
    pub mount_id: u32,
    /// Field 2: parent mount id.
    pub parent_id: u32,
    /// Field 3: device major of the superblock.
    pub major: u32,
    /// Field 3: device minor of the superblock.
    pub minor: u32,
    /// Field 4: root of the mount within the filesystem, unescaped bytes.
    pub root: Vec<u8>,
    /// Field 5: mount point relative to the reader's root, unescaped bytes.
    pub mount_point: Vec<u8>,
    /// Filesystem type (first field after ` - `).
    pub fstype: Vec<u8>,
    /// Mount source, unescaped bytes (may be empty: `mount("", …)` prints nothing).
    pub source: Vec<u8>,
    /// Super-block options, raw bytes.
    pub super_options: Vec<u8>,
}

/// A mountinfo line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountInfoError {
    /// A field is missing.
    #[error("malformed mountinfo line: missing {field}")]
    MissingField {
        /// Which field.
        field: &'static str,
    },
    /// A numeric field is not a number.
    #[error("malformed mountinfo line: {field} '{token}' is not a number")]
    BadNumber {
        /// Which field.
        field: &'static str,
        /// The offending token (escaped as in [`crate::escape`]).
        token: String,
    },
    /// The `major:minor` field is malformed.
    #[error("malformed mountinfo line: device '{token}' is not major:minor")]
    BadDevice {
        /// The offending token (escaped as in [`crate::escape`]).
        token: String,
    },
    /// The optional-fields list is not terminated by `-`.
    #[error("malformed mountinfo line: no ' - ' separator after the optional fields")]
    NoSeparator,
    /// More than one ` - ` separator: which one ends the optional fields is ambiguous (the
    /// kernel escapes no `-`, but it never prints a lone `-` as an optional field).
    #[error("malformed mountinfo line: more than one ' - ' separator")]
    AmbiguousSeparator,
}

/// One mountinfo line, checked field by field but not copied: the fields are slices of the
/// line, paths still escaped as the kernel prints them (`seq_path`: space, tab, newline and
/// backslash as `\ooo`). What a mount table needs of the lines that are not autofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountLine<'a> {
    /// Field 1: unique mount id.
    pub mount_id: u32,
    /// Field 2: parent mount id.
    pub parent_id: u32,
    /// Field 3: device major of the superblock.
    pub major: u32,
    /// Field 3: device minor of the superblock.
    pub minor: u32,
    /// Field 4, escaped.
    pub root: &'a [u8],
    /// Field 5, escaped. The kernel escapes the same path the same way, so two escaped mount
    /// points are equal exactly when the paths are.
    pub mount_point: &'a [u8],
    /// Per-mount options (`rw,nosuid,nodev,…`), as the kernel prints them.
    pub mount_options: &'a [u8],
    /// Filesystem type (first field after ` - `).
    pub fstype: &'a [u8],
    /// Mount source, escaped (may be empty).
    pub source: &'a [u8],
    /// Super-block options.
    pub super_options: &'a [u8],
}

impl<'a> MountLine<'a> {
    /// Parses one line (without its trailing newline).
    ///
    /// # Errors
    ///
    /// [`MountInfoError`] naming the first field that is missing or malformed.
    pub fn parse(line: &'a [u8]) -> Result<Self, MountInfoError> {
        let mut fields = line.split(|&b| b == b' ');
        let mut next = |field| next_field(&mut fields, field);
        let mount_id = number(next("mount id")?, "mount id")?;
        let parent_id = number(next("parent id")?, "parent id")?;
        let device = next("major:minor")?;
        let (major, minor) = device
            .iter()
            .position(|&b| b == b':')
            .and_then(|at| {
                let (ma, mi) = (&device[..at], &device[at + 1..]);
                Some((parse_decimal(ma)?, parse_decimal(mi)?))
            })
            .ok_or_else(|| MountInfoError::BadDevice {
                token: escape(device),
            })?;
        let root = next("root")?;
        let mount_point = next("mount point")?;
        let mount_options = next("mount options")?;
        loop {
            match fields.next() {
                Some(b"-") => break,
                Some(_) => continue,
                None => return Err(MountInfoError::NoSeparator),
            }
        }
        let fstype = next_field(&mut fields, "filesystem type")?;
        // The source may be empty (two spaces in a row); the super options never are.
        let source = fields.next().ok_or(MountInfoError::MissingField {
            field: "mount source",
        })?;
        let super_options = next_field(&mut fields, "super options")?;
        if fields.next().is_some() {
            // The kernel escapes spaces in every field: more fields means a second separator
            // was taken for the first one (a stray `-` among the optional fields).
            return Err(MountInfoError::AmbiguousSeparator);
        }
        Ok(Self {
            mount_id,
            parent_id,
            major,
            minor,
            root,
            mount_point,
            mount_options,
            fstype,
            source,
            super_options,
        })
    }

    /// Whether this is an autofs mount.
    pub fn is_autofs(&self) -> bool {
        self.fstype == b"autofs"
    }

    /// The line with its paths unescaped and its fields copied.
    pub fn to_owned(&self) -> MountInfo {
        MountInfo {
            mount_id: self.mount_id,
            parent_id: self.parent_id,
            major: self.major,
            minor: self.minor,
            root: unescape(self.root),
            mount_point: unescape(self.mount_point),
            fstype: self.fstype.to_vec(),
            source: unescape(self.source),
            super_options: self.super_options.to_vec(),
        }
    }
}

impl MountInfo {
    /// Parses one line (without its trailing newline).
    ///
    /// # Errors
    ///
    /// [`MountInfoError`] naming the first field that is missing or malformed.
    pub fn parse(line: &[u8]) -> Result<Self, MountInfoError> {
        MountLine::parse(line).map(|m| m.to_owned())
    }

    /// CRIU's s_dev: `MKKDEV(major, minor) = (major << 20) | minor` (not `st_dev`'s encoding).
    pub fn criu_s_dev(&self) -> u32 {
        (self.major << 20) | self.minor
    }
}

/// Whether a line describes an autofs mount even though it did not parse as one: any
/// ` - autofs ` in it (the kernel escapes spaces in paths, so this only occurs as a separator
/// followed by the filesystem type), or, without any separator, the word `autofs` anywhere. Such
/// lines are reported as per-mount errors rather than ignored with other unparseable lines.
pub fn looks_like_autofs(line: &[u8]) -> bool {
    if contains(line, b" - ") {
        contains(line, b" - autofs ")
    } else {
        contains(line, b"autofs")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn next_field<'a>(
    fields: &mut impl Iterator<Item = &'a [u8]>,
    field: &'static str,
) -> Result<&'a [u8], MountInfoError> {
    fields
        .next()
        .filter(|t| !t.is_empty())
        .ok_or(MountInfoError::MissingField { field })
}

fn number(token: &[u8], field: &'static str) -> Result<u32, MountInfoError> {
    parse_decimal(token).ok_or_else(|| MountInfoError::BadNumber {
        field,
        token: escape(token),
    })
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash (`seq_path`).
/// Anything that is not a valid three-digit octal escape is kept verbatim.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    if !field.contains(&b'\\') {
        return field.to_vec();
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTOFS: &str = "40 25 0:52 / /mnt/auto\\040dir rw,relatime shared:20 master:3 - autofs /etc/auto.misc rw,fd=5,pgrp=95929,timeout=300,minproto=5,maxproto=5,indirect,pipe_ino=3480845226";

    #[test]
    fn parses_an_autofs_line_with_optional_fields_and_escapes() {
        let m = MountInfo::parse(AUTOFS.as_bytes()).unwrap();
        assert_eq!(m.mount_id, 40);
        assert_eq!(m.parent_id, 25);
        assert_eq!((m.major, m.minor), (0, 52));
        assert_eq!(m.mount_point, b"/mnt/auto dir");
        assert!(MountLine::parse(AUTOFS.as_bytes()).unwrap().is_autofs());
        assert_eq!(m.source, b"/etc/auto.misc");
        assert!(m.super_options.ends_with(b"pipe_ino=3480845226"));
        assert_eq!(m.criu_s_dev(), 52);
    }

    #[test]
    fn criu_s_dev_uses_mkkdev_not_st_dev_encoding() {
        let m = MountInfo::parse(AUTOFS.replace("0:52", "0:1209").as_bytes()).unwrap();
        assert_eq!(m.criu_s_dev(), 1209);
        let m = MountInfo::parse(AUTOFS.replace("0:52", "8:1").as_bytes()).unwrap();
        assert_eq!(m.criu_s_dev(), (8 << 20) | 1);
    }

    #[test]
    fn unescapes_space_tab_newline_and_backslash() {
        assert_eq!(unescape(b"/a\\040b\\011c\\012d\\134e"), b"/a b\tc\nd\\e");
        assert_eq!(unescape(b"/trailing\\04"), b"/trailing\\04");
        assert_eq!(unescape(b"/not\\999octal"), b"/not\\999octal");
        assert_eq!(unescape(b"/plain"), b"/plain");
        assert_eq!(unescape(b"/caf\xe9\\040x"), b"/caf\xe9 x");
    }

    #[test]
    fn malformed_lines_name_the_offending_token() {
        let err = MountInfo::parse(b"x 25 0:52 / /m rw - autofs s o").unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed mountinfo line: mount id 'x' is not a number"
        );
        let err = MountInfo::parse(b"40 25 052 / /m rw - autofs s o").unwrap_err();
        assert!(err.to_string().contains("'052'"), "{err}");
        let err = MountInfo::parse(b"40 25 0:52 / /m rw shared:1 autofs s o").unwrap_err();
        assert_eq!(err, MountInfoError::NoSeparator);
        let err = MountInfo::parse(b"40 25 0:52 / /m rw -").unwrap_err();
        assert!(err.to_string().contains("filesystem type"), "{err}");
        assert!(MountInfo::parse(b"").is_err());
    }

    #[test]
    fn recognises_autofs_in_unparseable_lines() {
        assert!(looks_like_autofs(b"x 1 0:1 / /m rw - autofs a fd=1"));
        assert!(!looks_like_autofs(b"x 1 0:1 / /m rw - tmpfs a rw"));
        assert!(!looks_like_autofs(
            b"x 1 0:1 / /autofs rw - tmpfs autofs rw"
        ));
        assert!(looks_like_autofs(b"garbage autofs garbage"));
    }

    #[test]
    fn a_stray_separator_makes_an_autofs_line_an_error_not_another_fstype() {
        let line = b"40 22 0:52 / /m rw - shared:1 - autofs src fd=5,pgrp=1";
        assert_eq!(
            MountInfo::parse(line).unwrap_err(),
            MountInfoError::AmbiguousSeparator
        );
        assert!(looks_like_autofs(line));
    }

    #[test]
    fn paths_and_sources_are_kept_as_exact_bytes() {
        let line = b"40 22 0:52 / /mnt/caf\xe9 rw - autofs \xff\xfe rw,fd=5";
        let m = MountInfo::parse(line).unwrap();
        assert_eq!(m.mount_point, b"/mnt/caf\xe9");
        assert_eq!(m.source, b"\xff\xfe");
    }

    #[test]
    fn an_empty_source_is_a_valid_field() {
        let m = MountInfo::parse(b"40 22 0:52 / /m rw - autofs  rw,fd=5").unwrap();
        assert_eq!(m.source, b"");
        assert_eq!(m.super_options, b"rw,fd=5");
    }

    #[test]
    fn accepts_very_long_lines() {
        let long = format!("/{}", "d".repeat(8192));
        let m = MountInfo::parse(AUTOFS.replace("/mnt/auto\\040dir", &long).as_bytes()).unwrap();
        assert_eq!(m.mount_point, long.as_bytes());
    }
}
