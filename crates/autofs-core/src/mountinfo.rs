//! Parsing of `/proc/<pid>/mountinfo` lines (proc(5)), with octal unescaping and errors that
//! name the offending token. Lines of any length are accepted (CRIU's 1024-byte re-read is not).

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
    /// Field 4: root of the mount within the filesystem, unescaped.
    pub root: String,
    /// Field 5: mount point relative to the reader's root, unescaped.
    pub mount_point: String,
    /// Filesystem type (first field after ` - `).
    pub fstype: String,
    /// Mount source, unescaped.
    pub source: String,
    /// Super-block options, raw.
    pub super_options: String,
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
        /// The offending token.
        token: String,
    },
    /// The `major:minor` field is malformed.
    #[error("malformed mountinfo line: device '{token}' is not major:minor")]
    BadDevice {
        /// The offending token.
        token: String,
    },
    /// The optional-fields list is not terminated by `-`.
    #[error("malformed mountinfo line: no ' - ' separator after the optional fields")]
    NoSeparator,
}

impl MountInfo {
    /// Parses one line (without its trailing newline).
    pub fn parse(line: &str) -> Result<Self, MountInfoError> {
        let mut fields = line.split(' ');
        let mut next = |field| next_field(&mut fields, field);
        let mount_id = number(next("mount id")?, "mount id")?;
        let parent_id = number(next("parent id")?, "parent id")?;
        let device = next("major:minor")?;
        let (major, minor) = device
            .split_once(':')
            .and_then(|(ma, mi)| Some((ma.parse().ok()?, mi.parse().ok()?)))
            .ok_or_else(|| MountInfoError::BadDevice {
                token: device.to_owned(),
            })?;
        let root = unescape(next("root")?);
        let mount_point = unescape(next("mount point")?);
        next("mount options")?;
        loop {
            match fields.next() {
                Some("-") => break,
                Some(_) => continue,
                None => return Err(MountInfoError::NoSeparator),
            }
        }
        let fstype = next_field(&mut fields, "filesystem type")?.to_owned();
        let source = unescape(next_field(&mut fields, "mount source")?);
        let super_options = next_field(&mut fields, "super options")?.to_owned();
        Ok(Self {
            mount_id,
            parent_id,
            major,
            minor,
            root,
            mount_point,
            fstype,
            source,
            super_options,
        })
    }

    /// CRIU's s_dev: `MKKDEV(major, minor) = (major << 20) | minor` (not `st_dev`'s encoding).
    pub fn criu_s_dev(&self) -> u32 {
        (self.major << 20) | self.minor
    }
}

/// Whether a line that failed to parse describes an autofs mount, so that its failure is
/// reported as a per-mount error rather than ignored with the rest of the unparseable lines.
pub fn looks_like_autofs(line: &str) -> bool {
    line.split(" - ")
        .nth(1)
        .map_or(line.contains("autofs"), |tail| {
            tail.split(' ').next() == Some("autofs")
        })
}

fn next_field<'a>(
    fields: &mut impl Iterator<Item = &'a str>,
    field: &'static str,
) -> Result<&'a str, MountInfoError> {
    fields
        .next()
        .filter(|t| !t.is_empty())
        .ok_or(MountInfoError::MissingField { field })
}

fn number(token: &str, field: &'static str) -> Result<u32, MountInfoError> {
    token.parse().map_err(|_| MountInfoError::BadNumber {
        field,
        token: token.to_owned(),
    })
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash (`seq_path`).
/// Anything that is not a valid three-digit octal escape is kept verbatim.
pub fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
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
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTOFS: &str = "40 25 0:52 / /mnt/auto\\040dir rw,relatime shared:20 master:3 - autofs /etc/auto.misc rw,fd=5,pgrp=95929,timeout=300,minproto=5,maxproto=5,indirect,pipe_ino=3480845226";

    #[test]
    fn parses_an_autofs_line_with_optional_fields_and_escapes() {
        let m = MountInfo::parse(AUTOFS).unwrap();
        assert_eq!(m.mount_id, 40);
        assert_eq!(m.parent_id, 25);
        assert_eq!((m.major, m.minor), (0, 52));
        assert_eq!(m.mount_point, "/mnt/auto dir");
        assert_eq!(m.fstype, "autofs");
        assert_eq!(m.source, "/etc/auto.misc");
        assert!(m.super_options.ends_with("pipe_ino=3480845226"));
        assert_eq!(m.criu_s_dev(), 52);
    }

    #[test]
    fn criu_s_dev_uses_mkkdev_not_st_dev_encoding() {
        let m = MountInfo::parse(&AUTOFS.replace("0:52", "0:1209")).unwrap();
        assert_eq!(m.criu_s_dev(), 1209);
        let m = MountInfo::parse(&AUTOFS.replace("0:52", "8:1")).unwrap();
        assert_eq!(m.criu_s_dev(), (8 << 20) | 1);
    }

    #[test]
    fn unescapes_space_tab_newline_and_backslash() {
        assert_eq!(unescape("/a\\040b\\011c\\012d\\134e"), "/a b\tc\nd\\e");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
        assert_eq!(unescape("/not\\999octal"), "/not\\999octal");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn malformed_lines_name_the_offending_token() {
        let err = MountInfo::parse("x 25 0:52 / /m rw - autofs s o").unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed mountinfo line: mount id 'x' is not a number"
        );
        let err = MountInfo::parse("40 25 052 / /m rw - autofs s o").unwrap_err();
        assert!(err.to_string().contains("'052'"), "{err}");
        let err = MountInfo::parse("40 25 0:52 / /m rw shared:1 autofs s o").unwrap_err();
        assert_eq!(err, MountInfoError::NoSeparator);
        let err = MountInfo::parse("40 25 0:52 / /m rw -").unwrap_err();
        assert!(err.to_string().contains("filesystem type"), "{err}");
        assert!(MountInfo::parse("").is_err());
    }

    #[test]
    fn recognises_autofs_in_unparseable_lines() {
        assert!(looks_like_autofs("x 1 0:1 / /m rw - autofs a fd=1"));
        assert!(!looks_like_autofs("x 1 0:1 / /m rw - tmpfs a rw"));
        assert!(looks_like_autofs("garbage autofs garbage"));
    }

    #[test]
    fn accepts_very_long_lines() {
        let long = format!("/{}", "d".repeat(8192));
        let m = MountInfo::parse(&AUTOFS.replace("/mnt/auto\\040dir", &long)).unwrap();
        assert_eq!(m.mount_point, long);
    }
}
