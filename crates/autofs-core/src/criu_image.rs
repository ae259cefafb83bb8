//! CRIU image files for autofs mounts: `autofs-<s_dev>.img` holding the common magic
//! 0x54564319, the autofs magic 0x49353943, a u32 length and the proto2 `autofs_entry`
//! (reference §1). Encoded by hand — nine int32 varint fields — so the core needs no protobuf
//! runtime; the test suite checks the bytes against prost and CRIU's own `crit`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::report::AutofsEntry;

/// `IMG_COMMON_MAGIC` ("Sarov"), written first in every image of format v1.1.
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// `AUTOFS_MAGIC` ("Sochi").
pub const AUTOFS_MAGIC: u32 = 0x4935_3943;

/// Writing an image failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write CRIU image {path}")]
pub struct ImageError {
    /// The image path.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// CRIU's file name for the autofs image of superblock `criu_s_dev`.
pub fn image_name(criu_s_dev: u32) -> String {
    format!("autofs-{criu_s_dev}.img")
}

/// The protobuf encoding of `entry`: required fields always (even when 0), optional ones
/// only when set, in field-number order as protobuf-c writes them.
pub fn encode_entry(entry: &AutofsEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    let required = [
        entry.fd,
        entry.pgrp,
        entry.timeout,
        entry.minproto,
        entry.maxproto,
        entry.mode,
    ];
    for (field, value) in (1u32..).zip(required) {
        put_int32(&mut out, field, value);
    }
    for (field, value) in [(7, entry.uid), (8, entry.gid), (9, entry.read_fd)] {
        if let Some(value) = value {
            put_int32(&mut out, field, value);
        }
    }
    out
}

/// The whole image file: magics, length, message (host byte order, as CRIU writes it).
///
/// # Panics
///
/// Never: the message is at most 99 bytes (nine int32 fields of at most 11 bytes each), so
/// its length fits the image's `u32`.
pub fn encode_image(entry: &AutofsEntry) -> Vec<u8> {
    let payload = encode_entry(entry);
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&IMG_COMMON_MAGIC.to_ne_bytes());
    out.extend_from_slice(&AUTOFS_MAGIC.to_ne_bytes());
    let len = u32::try_from(payload.len()).expect("an autofs entry is at most 99 bytes");
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Writes `dir/autofs-<criu_s_dev>.img`, replacing any previous file (CRIU's `O_TRUNC`),
/// creating `dir` first if needed. Returns the image's path.
///
/// # Errors
///
/// [`ImageError`] (the image path, with the [`io::Error`] as its source) when `dir` cannot
/// be created or the file cannot be written.
pub fn write_image(
    dir: &Path,
    criu_s_dev: u32,
    entry: &AutofsEntry,
) -> Result<PathBuf, ImageError> {
    let path = dir.join(image_name(criu_s_dev));
    fs::create_dir_all(dir)
        .and_then(|()| fs::write(&path, encode_image(entry)))
        .map_err(|source| ImageError {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

fn put_int32(out: &mut Vec<u8>, field: u32, value: i32) {
    put_varint(out, u64::from(field << 3)); // wire type 0
    // int32 is sign-extended to 64 bits: -1 takes ten bytes.
    put_varint(out, i64::from(value) as u64);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fd: i32, pgrp: i32, timeout: i32, mode: i32) -> AutofsEntry {
        AutofsEntry {
            fd,
            pgrp,
            timeout,
            minproto: 5,
            maxproto: 5,
            mode,
            uid: None,
            gid: None,
            read_fd: None,
        }
    }

    #[test]
    fn indirect_image_matches_the_reference_bytes() {
        let bytes = encode_image(&entry(5, 1, 300, 1));
        let expected = [
            0x19, 0x43, 0x56, 0x54, 0x43, 0x39, 0x35, 0x49, 0x0d, 0x00, 0x00, 0x00, 0x08, 0x05,
            0x10, 0x01, 0x18, 0xac, 0x02, 0x20, 0x05, 0x28, 0x05, 0x30, 0x01,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn catatonic_payload_encodes_minus_one_in_ten_bytes_and_zero_timeout() {
        let payload = encode_entry(&entry(-1, 1234, 0, 0));
        let expected = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x10, 0xd2, 0x09,
            0x18, 0x00, 0x20, 0x05, 0x28, 0x05, 0x30, 0x00,
        ];
        assert_eq!(payload, expected);
    }

    #[test]
    fn image_name_uses_criu_s_dev() {
        assert_eq!(image_name(1209), "autofs-1209.img");
    }
}
