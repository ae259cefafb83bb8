//! Strict parsing of autofs super options (`fd=5,pgrp=1,timeout=300,...,pipe_ino=123`).
//!
//! Decisions and messages follow CRIU's `parse_options()` (reference §3.2): the same required
//! options in the same order, the last mode keyword wins, unknown tokens are kept. Text the kernel
//! never prints (garbage, bytes that are not ASCII, numbers beyond the kernel's own types) is an
//! error that names the token. Numbers the kernel does print keep their true value here; what
//! CRIU makes of them (`uid=`/`gid=` read with `%d`, `timeout=` with `xatoi`) is computed by
//! [`AutofsOptions::criu_uid`], [`AutofsOptions::criu_gid`] and [`AutofsOptions::criu_timeout`].

use serde::Serialize;

/// Mount type, in CRIU's numbering (0 direct, 1 indirect, 2 offset), not the kernel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// `direct`: the mount root itself is the trap.
    Direct,
    /// `indirect`: lookups of missing names in the root are the traps.
    Indirect,
    /// `offset`: a direct-like trap inside a multi-mount.
    Offset,
}

impl MountMode {
    /// CRIU's `autofs_entry.mode` value.
    pub fn criu_code(self) -> i32 {
        match self {
            Self::Direct => 0,
            Self::Indirect => 1,
            Self::Offset => 2,
        }
    }
}

/// The kernel pipe's inode as shown by `pipe_ino=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeIno {
    /// `pipe_ino=-1`: the kernel holds no pipe (catatonic).
    None,
    /// The inode of the pipe whose write end the kernel holds.
    Ino(u64),
}

/// Parsed autofs options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutofsOptions {
    /// `fd=`: write-end fd number in the mounting process; -1 when catatonic.
    pub fd: i32,
    /// `pgrp=`: the daemon's process group, in the reader's pid namespace.
    pub pgrp: i32,
    /// `timeout=` in seconds (the kernel prints an unsigned long).
    pub timeout: u64,
    /// `minproto=`: the kernel stores the `u32` given at mount in an `int` and prints it with
    /// `%d`, so a value of 2^31 or more shows negative (`minproto=4294967295` → `-1`).
    pub minproto: i32,
    /// `maxproto=`.
    pub maxproto: i32,
    /// Last of `direct` / `indirect` / `offset`.
    pub mode: MountMode,
    /// `uid=` when present (the kernel prints a u32 in the initial user namespace).
    pub uid: Option<u32>,
    /// `gid=` when present (a u32, like `uid=`).
    pub gid: Option<u32>,
    /// `pipe_ino=`; `None` when the kernel does not show it (< 4.6, no CHECKPOINT_RESTORE).
    pub pipe_ino: Option<PipeIno>,
    /// `strictexpire` (dropped by CRIU).
    pub strictexpire: bool,
    /// `ignore` (dropped by CRIU).
    pub ignore: bool,
    /// VFS flags CRIU strips before parsing (`rw`, `ro`, `sync`, `dirsync`, `mand`).
    pub vfs_flags: Vec<String>,
    /// Every other token, verbatim and in order.
    pub unknown: Vec<String>,
}

/// Why an option string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A required option is absent. The message is CRIU's.
    #[error("Failed to find {what} option")]
    Missing {
        /// CRIU's name for it: `fd`, `pgrp`, …, `mode (direct,indirect,offset)`.
        what: &'static str,
    },
    /// A value is not a decimal number.
    #[error("invalid autofs option '{token}': not a number")]
    NotANumber {
        /// The offending `key=value` token.
        token: String,
    },
    /// A value does not fit CRIU's int32 field.
    #[error("invalid autofs option '{token}': out of int range")]
    OutOfRange {
        /// The offending `key=value` token.
        token: String,
    },
    /// The options are not ASCII text (the kernel prints only ASCII here).
    #[error("invalid autofs options '{options}': not ASCII text")]
    NotText {
        /// The options, escaped as in [`crate::escape`].
        options: String,
    },
    /// `pipe_ino=` is neither an unsigned 64-bit number nor -1. The message is CRIU's.
    #[error("pipe_ino ({value}) mount option parse failed")]
    PipeIno {
        /// The value after `pipe_ino=`.
        value: String,
    },
}

impl OptionsError {
    /// Whether this is a missing-option error (as opposed to a malformed value).
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing { .. })
    }
}

impl AutofsOptions {
    /// Parses the super-options field of an autofs mountinfo line.
    ///
    /// A missing `pipe_ino` is not an error here: it makes the mount UNSUPPORTED, and CRIU
    /// checks it last, after every other required option.
    ///
    /// # Errors
    ///
    /// [`OptionsError`]: a required option missing (CRIU's message), or text the kernel never
    /// prints (naming the token).
    pub fn parse(options: impl AsRef<[u8]>) -> Result<Self, OptionsError> {
        let options = options.as_ref();
        let options = std::str::from_utf8(options)
            .ok()
            .filter(|o| o.is_ascii())
            .ok_or_else(|| OptionsError::NotText {
                options: crate::escape::escape(options),
            })?;
        let mut fd = None;
        let mut pgrp = None;
        let mut timeout = None;
        let mut minproto = None;
        let mut maxproto = None;
        let mut mode = None;
        let mut uid = None;
        let mut gid = None;
        let mut pipe_ino = None;
        let mut strictexpire = false;
        let mut ignore = false;
        let mut vfs_flags = Vec::new();
        let mut unknown = Vec::new();

        for token in options.split(',').filter(|t| !t.is_empty()) {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            match (key, token.contains('=')) {
                ("fd", true) => fd = Some(int(token, value, true)?),
                ("pgrp", true) => pgrp = Some(int(token, value, false)?),
                ("timeout", true) => timeout = Some(unsigned(token, value)?),
                ("minproto", true) => minproto = Some(int(token, value, true)?),
                ("maxproto", true) => maxproto = Some(int(token, value, false)?),
                ("uid", true) => uid = Some(unsigned(token, value)?),
                ("gid", true) => gid = Some(unsigned(token, value)?),
                ("pipe_ino", true) => pipe_ino = Some(parse_pipe_ino(value)?),
                ("direct", false) => mode = Some(MountMode::Direct),
                ("indirect", false) => mode = Some(MountMode::Indirect),
                ("offset", false) => mode = Some(MountMode::Offset),
                ("strictexpire", false) => strictexpire = true,
                ("ignore", false) => ignore = true,
                ("rw" | "ro" | "sync" | "dirsync" | "mand", false) => {
                    vfs_flags.push(token.to_owned())
                }
                _ => unknown.push(token.to_owned()),
            }
        }

        let missing = |what| OptionsError::Missing { what };
        Ok(Self {
            fd: fd.ok_or(missing("fd"))?,
            pgrp: pgrp.ok_or(missing("pgrp"))?,
            timeout: timeout.ok_or(missing("timeout"))?,
            minproto: minproto.ok_or(missing("minproto"))?,
            maxproto: maxproto.ok_or(missing("maxproto"))?,
            mode: mode.ok_or(missing("mode (direct,indirect,offset)"))?,
            uid,
            gid,
            pipe_ino,
            strictexpire,
            ignore,
            vfs_flags,
            unknown,
        })
    }

    /// The `uid` CRIU records: `sb_opt_cb()` reads `uid=` with `sscanf("%d")`, so a uid above
    /// `INT_MAX` wraps to a negative number (the kernel then rejects it at restore).
    pub fn criu_uid(&self) -> Option<i32> {
        self.uid.map(wrap_i32)
    }

    /// The `gid` CRIU records (wrapped like [`Self::criu_uid`]).
    pub fn criu_gid(&self) -> Option<i32> {
        self.gid.map(wrap_i32)
    }

    /// The `timeout` CRIU records, or CRIU's `xatoi` error for a timeout beyond `INT_MAX`
    /// (the kernel prints any unsigned long; CRIU's `parse_options()` then fails and so does
    /// the dump).
    ///
    /// # Errors
    ///
    /// CRIU's message for a value its `xatoi` rejects.
    pub fn criu_timeout(&self) -> Result<i32, String> {
        i32::try_from(self.timeout).map_err(|_| match i64::try_from(self.timeout) {
            Ok(v) => format!("value {v:#x} ({v}) is out of int range"),
            Err(_) => format!(
                "failed to convert string '{}': Numerical result out of range",
                self.timeout
            ),
        })
    }

    /// The first required option (in the order CRIU checks them) whose value CRIU cannot tell
    /// from absent: `parse_options()` in `criu/autofs.c` starts every field at `INT_MIN`
    /// (`AUTOFS_OPT_UNKNOWN`) and then fails with `"Failed to find <name> option"` for a field
    /// still equal to it, so a value the kernel prints as `INT_MIN` counts as not seen
    /// (reference §3.2). The kernel prints one only for `minproto=` (an `int` it fills from
    /// the `u32` given at mount: `minproto=2147483648` shows `minproto=-2147483648`).
    pub fn criu_unseen(&self) -> Option<&'static str> {
        [
            ("fd", self.fd),
            ("pgrp", self.pgrp),
            ("minproto", self.minproto),
            ("maxproto", self.maxproto),
        ]
        .into_iter()
        .find_map(|(name, value)| (value == i32::MIN).then_some(name))
    }

    /// The protocol version the kernel speaks to the daemon: `min(maxproto, 5)`.
    pub fn proto_version(&self) -> u32 {
        u32::try_from(self.maxproto.clamp(0, 5)).unwrap_or(0)
    }
}

/// Parses a decimal int32 as CRIU's `xatoi` would accept it, but without its silent
/// acceptance of trailing garbage. Only `fd` (`fd=-1` means catatonic) and `minproto` (an
/// `int` the kernel fills from a `u32`) may be negative.
fn int(token: &str, value: &str, allow_negative: bool) -> Result<i32, OptionsError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let negative = digits.len() != value.len();
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (negative && !allow_negative)
    {
        return Err(OptionsError::NotANumber {
            token: token.to_owned(),
        });
    }
    value.parse::<i32>().map_err(|_| OptionsError::OutOfRange {
        token: token.to_owned(),
    })
}

/// An unsigned decimal of the kernel's width `T` (`%u`, `%lu`).
fn unsigned<T: std::str::FromStr>(token: &str, value: &str) -> Result<T, OptionsError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OptionsError::NotANumber {
            token: token.to_owned(),
        });
    }
    value.parse::<T>().map_err(|_| OptionsError::OutOfRange {
        token: token.to_owned(),
    })
}

/// `(int)` of an unsigned 32-bit value, as `sscanf("%d")` stores it.
fn wrap_i32(value: u32) -> i32 {
    i32::from_ne_bytes(value.to_ne_bytes())
}

/// CRIU's mountinfo parse of an autofs mount (`autofs_parse()`, reference §3.1), which runs on
/// every autofs mount of every namespace CRIU collects, before any mount is skipped (external
/// binds included): every `pipe_ino=` token must be a whole decimal `long` (`xatol()`), and the
/// last one at most `UINT32_MAX`. A missing `pipe_ino` passes (a warning only).
///
/// # Errors
///
/// CRIU's message: `pipe_ino (<value>) mount option parse failed` or
/// `overflow: pipe_ino > UINT32_MAX`; either fails the whole dump.
pub fn criu_autofs_parse(super_options: &[u8]) -> Result<(), String> {
    let mut last = None;
    for token in super_options.split(|&b| b == b',') {
        let Some(value) = token.strip_prefix(b"pipe_ino=") else {
            continue;
        };
        let parsed = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<i64>().ok());
        match parsed {
            Some(v) => last = Some(v),
            None => {
                return Err(format!(
                    "pipe_ino ({}) mount option parse failed",
                    crate::escape::escape(value)
                ));
            }
        }
    }
    match last {
        Some(v) if v > i64::from(u32::MAX) => Err("overflow: pipe_ino > UINT32_MAX".into()),
        _ => Ok(()),
    }
}

/// `pipe_ino=` is an unsigned 64-bit inode or `-1` (kernels are moving to a 64-bit format).
fn parse_pipe_ino(value: &str) -> Result<PipeIno, OptionsError> {
    if value == "-1" {
        return Ok(PipeIno::None);
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OptionsError::PipeIno {
            value: value.to_owned(),
        });
    }
    value
        .parse::<u64>()
        .map(PipeIno::Ino)
        .map_err(|_| OptionsError::PipeIno {
            value: value.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_parse_stage_fails_only_on_pipe_ino() {
        for ok in [
            &b"rw,fd=5,pgrp=1,timeout=300,minproto=5,maxproto=5,indirect,pipe_ino=4294967295"[..],
            b"rw,fd=-1,pgrp=1,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=-1",
            b"rw,fd=x,pgrp=,nonsense",
            b"rw,fd=5,pgrp=1,timeout=300,minproto=5,maxproto=5,indirect",
        ] {
            assert_eq!(
                criu_autofs_parse(ok),
                Ok(()),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        assert_eq!(
            criu_autofs_parse(b"rw,fd=5,pipe_ino=4294967296").unwrap_err(),
            "overflow: pipe_ino > UINT32_MAX"
        );
        assert_eq!(
            criu_autofs_parse(b"rw,pipe_ino=12x,pipe_ino=7").unwrap_err(),
            "pipe_ino (12x) mount option parse failed"
        );
        assert_eq!(
            criu_autofs_parse(b"rw,pipe_ino=18446744073709551615").unwrap_err(),
            "pipe_ino (18446744073709551615) mount option parse failed",
            "beyond a long: strtol's ERANGE"
        );
        // Only the last value is checked for overflow, as CRIU does.
        assert_eq!(criu_autofs_parse(b"pipe_ino=4294967296,pipe_ino=7"), Ok(()));
    }

    const FULL: &str =
        "rw,fd=5,pgrp=95929,timeout=300,minproto=5,maxproto=5,indirect,pipe_ino=3480845226";

    #[test]
    fn parses_every_field_of_a_kernel_option_string() {
        let o = AutofsOptions::parse(FULL).unwrap();
        assert_eq!(
            (o.fd, o.pgrp, o.timeout, o.minproto, o.maxproto),
            (5, 95929, 300, 5, 5)
        );
        assert_eq!(o.mode, MountMode::Indirect);
        assert_eq!(o.pipe_ino, Some(PipeIno::Ino(3480845226)));
        assert_eq!((o.uid, o.gid), (None, None));
        assert_eq!(o.vfs_flags, ["rw"]);
        assert!(o.unknown.is_empty());
        assert_eq!(o.proto_version(), 5);
    }

    #[test]
    fn catatonic_options_have_negative_fd_and_no_pipe() {
        let o = AutofsOptions::parse(
            "rw,fd=-1,pgrp=1234,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=-1",
        )
        .unwrap();
        assert_eq!(o.fd, -1);
        assert_eq!(o.pipe_ino, Some(PipeIno::None));
        assert_eq!(o.mode, MountMode::Direct);
    }

    #[test]
    fn uid_gid_strictexpire_ignore_and_unknown_tokens_are_kept() {
        let o = AutofsOptions::parse(
            "ro,fd=3,uid=1000,gid=100,pgrp=7,timeout=60,minproto=3,maxproto=4,offset,strictexpire,ignore,future=1,pipe_ino=9",
        )
        .unwrap();
        assert_eq!((o.uid, o.gid), (Some(1000), Some(100)));
        assert!(o.strictexpire && o.ignore);
        assert_eq!(o.unknown, ["future=1"]);
        assert_eq!(o.mode, MountMode::Offset);
        assert_eq!(o.proto_version(), 4);
    }

    #[test]
    fn last_mode_keyword_wins() {
        let o = AutofsOptions::parse(FULL.replace("indirect", "direct,offset,indirect")).unwrap();
        assert_eq!(o.mode, MountMode::Indirect);
    }

    #[test]
    fn missing_required_options_fail_in_criu_order_with_criu_messages() {
        let cases = [
            ("fd=5,", "Failed to find fd option"),
            ("pgrp=95929,", "Failed to find pgrp option"),
            ("timeout=300,", "Failed to find timeout option"),
            ("minproto=5,", "Failed to find minproto option"),
            ("maxproto=5,", "Failed to find maxproto option"),
            (
                ",indirect",
                "Failed to find mode (direct,indirect,offset) option",
            ),
        ];
        for (remove, message) in cases {
            let err = AutofsOptions::parse(FULL.replacen(remove, "", 1)).unwrap_err();
            assert_eq!(err.to_string(), message, "removing {remove}");
            assert!(err.is_missing());
        }
        // fd is checked first even when everything is missing.
        assert_eq!(
            AutofsOptions::parse("").unwrap_err().to_string(),
            "Failed to find fd option"
        );
    }

    #[test]
    fn missing_pipe_ino_is_not_an_option_error() {
        let o = AutofsOptions::parse(FULL.replace(",pipe_ino=3480845226", "")).unwrap();
        assert_eq!(o.pipe_ino, None);
    }

    #[test]
    fn garbage_numbers_are_errors_naming_the_token() {
        for bad in [
            "fd=abc",
            "fd=5x",
            "pgrp=",
            "timeout=-3",
            "maxproto=0x5",
            "uid=-1",
        ] {
            // Errors stop the parse at the first bad token, so prepending it is enough.
            let err = AutofsOptions::parse(format!("{bad},{FULL}")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid autofs option '{bad}': not a number")
            );
        }
    }

    #[test]
    fn a_negative_minproto_is_what_the_kernel_prints_for_a_u32_beyond_int_max() {
        // Observed on Linux 6.18: mounting with minproto=4294967295 (or 2147483648) shows
        // minproto=-1 (or -2147483648) in mountinfo; CRIU's xatoi reads it as it is.
        for (shown, value) in [("-1", -1), ("-2147483648", i32::MIN)] {
            let o = AutofsOptions::parse(FULL.replace("minproto=5", &format!("minproto={shown}")))
                .unwrap();
            assert_eq!(o.minproto, value);
            assert_eq!(o.proto_version(), 5, "maxproto alone picks the version");
        }
        let err =
            AutofsOptions::parse(FULL.replace("minproto=5", "minproto=-2147483649")).unwrap_err();
        assert!(matches!(err, OptionsError::OutOfRange { .. }), "{err}");
    }

    #[test]
    fn int_min_is_what_criu_takes_for_an_option_not_seen() {
        assert_eq!(AutofsOptions::parse(FULL).unwrap().criu_unseen(), None);
        let o = AutofsOptions::parse(FULL.replace("minproto=5", "minproto=-2147483648")).unwrap();
        assert_eq!(o.criu_unseen(), Some("minproto"));
        let o = AutofsOptions::parse(FULL.replace("minproto=5", "minproto=-2147483647")).unwrap();
        assert_eq!(o.criu_unseen(), None, "only INT_MIN itself");
    }

    #[test]
    fn numbers_beyond_the_kernels_own_types_are_errors() {
        let err = AutofsOptions::parse(FULL.replace("pgrp=95929", "pgrp=2147483648")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid autofs option 'pgrp=2147483648': out of int range"
        );
        let err = AutofsOptions::parse(format!("uid=4294967296,{FULL}")).unwrap_err();
        assert!(matches!(err, OptionsError::OutOfRange { .. }), "{err}");
        let err = AutofsOptions::parse(FULL.replace("timeout=300", "timeout=18446744073709551616"))
            .unwrap_err();
        assert!(matches!(err, OptionsError::OutOfRange { .. }), "{err}");
    }

    #[test]
    fn numbers_the_kernel_prints_get_criu_values() {
        // uid/gid are u32 (`%u`): CRIU's `sscanf("%d")` wraps them.
        let o = AutofsOptions::parse(format!("uid=4294967295,gid=3000000000,{FULL}")).unwrap();
        assert_eq!((o.uid, o.gid), (Some(u32::MAX), Some(3_000_000_000)));
        assert_eq!(
            (o.criu_uid(), o.criu_gid()),
            (Some(-1), Some(-1_294_967_296))
        );
        let o = AutofsOptions::parse(format!("uid=1000,{FULL}")).unwrap();
        assert_eq!(o.criu_uid(), Some(1000));
        // timeout is an unsigned long: CRIU's xatoi refuses what does not fit an int.
        let o = AutofsOptions::parse(FULL.replace("timeout=300", "timeout=4294967296")).unwrap();
        assert_eq!(o.timeout, 4_294_967_296);
        assert_eq!(
            o.criu_timeout().unwrap_err(),
            "value 0x100000000 (4294967296) is out of int range"
        );
        let o = AutofsOptions::parse(FULL.replace("timeout=300", "timeout=18446744073709551615"))
            .unwrap();
        assert!(o.criu_timeout().unwrap_err().contains("failed to convert"));
        assert_eq!(AutofsOptions::parse(FULL).unwrap().criu_timeout(), Ok(300));
    }

    #[test]
    fn bytes_that_are_not_ascii_are_an_error_naming_them() {
        let err = AutofsOptions::parse(b"fd=5,pgrp=\xe9").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid autofs options 'fd=5,pgrp=\\xe9': not ASCII text"
        );
    }

    #[test]
    fn pipe_ino_accepts_u64_and_minus_one_only() {
        let big = AutofsOptions::parse(FULL.replace("3480845226", "18446744073709551615")).unwrap();
        assert_eq!(big.pipe_ino, Some(PipeIno::Ino(u64::MAX)));
        for bad in ["-2", "abc", "", "18446744073709551616"] {
            let err = AutofsOptions::parse(FULL.replace("3480845226", bad)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("pipe_ino ({bad}) mount option parse failed")
            );
        }
    }
}
