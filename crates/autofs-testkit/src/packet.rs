//! Decoding of autofs v5 request packets (`struct autofs_v5_packet`).

/// Size the kernel writes for one v5 packet on x86-64 (300 bytes of fields, 8-aligned).
pub const V5_PACKET_SIZE: usize = 304;
/// Packet type: a missing name in an indirect mount.
pub const MISSING_INDIRECT: i32 = 3;
/// Packet type: an expire request for an indirect mount.
pub const EXPIRE_INDIRECT: i32 = 4;
/// Packet type: a lookup of a direct (or offset) mount root.
pub const MISSING_DIRECT: i32 = 5;
/// Packet type: an expire request for a direct mount.
pub const EXPIRE_DIRECT: i32 = 6;

/// One request packet read from an autofs pipe, with its raw bytes and decoded v5 fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Bytes returned by the single `read()` (304 for a v5 packet on x86-64).
    pub raw: Vec<u8>,
    /// `hdr.proto_version` @0.
    pub proto_version: i32,
    /// `hdr.type` @4 (see [`MISSING_INDIRECT`] etc.).
    pub packet_type: i32,
    /// `wait_queue_token` @8, the argument of `AUTOFS_IOC_READY`/`FAIL`.
    pub token: u32,
    /// `dev` @12 (`new_encode_dev` of the autofs superblock).
    pub dev: u32,
    /// `ino` @16 (autofs inode of the directory the request is about).
    pub ino: u64,
    /// `uid` @24 of the requester.
    pub uid: u32,
    /// `gid` @28 of the requester.
    pub gid: u32,
    /// `pid` @32 of the requester, in the daemon's pid namespace.
    pub pid: u32,
    /// `tgid` @36 of the requester, in the daemon's pid namespace.
    pub tgid: u32,
    /// `len` @40, length of `name`.
    pub len: u32,
    /// `name[256]` @44, truncated to `len` bytes.
    pub name: Vec<u8>,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

impl Packet {
    /// Decodes a v5 packet. Needs at least the 300 bytes of fields.
    ///
    /// # Errors
    ///
    /// A message giving the length when `raw` is shorter than 300 bytes.
    ///
    /// # Panics
    ///
    /// Never: every field is read after that length check.
    pub fn decode(raw: &[u8]) -> Result<Packet, String> {
        if raw.len() < 300 {
            return Err(format!(
                "packet of {} bytes is shorter than a v5 packet",
                raw.len()
            ));
        }
        let len = u32_at(raw, 40);
        let name_len = (len as usize).min(256);
        Ok(Packet {
            raw: raw.to_vec(),
            proto_version: u32_at(raw, 0) as i32,
            packet_type: u32_at(raw, 4) as i32,
            token: u32_at(raw, 8),
            dev: u32_at(raw, 12),
            ino: u64::from_ne_bytes(raw[16..24].try_into().expect("8 bytes")),
            uid: u32_at(raw, 24),
            gid: u32_at(raw, 28),
            pid: u32_at(raw, 32),
            tgid: u32_at(raw, 36),
            len,
            name: raw[44..44 + name_len].to_vec(),
        })
    }

    /// The name as (lossy) UTF-8.
    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields_at_their_offsets() {
        let mut raw = vec![0u8; V5_PACKET_SIZE];
        raw[0..4].copy_from_slice(&5i32.to_ne_bytes());
        raw[4..8].copy_from_slice(&3i32.to_ne_bytes());
        raw[8..12].copy_from_slice(&77u32.to_ne_bytes());
        raw[16..24].copy_from_slice(&9u64.to_ne_bytes());
        raw[32..36].copy_from_slice(&42u32.to_ne_bytes());
        raw[40..44].copy_from_slice(&3u32.to_ne_bytes());
        raw[44..47].copy_from_slice(b"foo");
        let p = Packet::decode(&raw).unwrap();
        assert_eq!(
            (p.proto_version, p.packet_type, p.token, p.ino, p.pid),
            (5, 3, 77, 9, 42)
        );
        assert_eq!(p.name_str(), "foo");
        assert!(Packet::decode(&raw[..100]).is_err());
    }
}
