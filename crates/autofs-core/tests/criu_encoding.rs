//! The hand-written CRIU entry encoding must be byte-identical to prost's
//! encoding of CRIU's own schema (proto/criu/autofs.proto, proto2 with required fields).

use autofs_core::AutofsEntry;
use autofs_core::criu_image::encode_entry;
use prost::Message;

#[test]
fn entry_encoding_matches_prost_for_edge_values() {
    let values = [0, 1, -1, 127, 128, 300, 16384, i32::MAX, i32::MIN];
    for (i, &v) in values.iter().enumerate() {
        let w = values[(i + 3) % values.len()];
        for optional in [None, Some(v), Some(w)] {
            let entry = AutofsEntry {
                fd: v,
                pgrp: w,
                timeout: 0,
                minproto: v,
                maxproto: 5,
                mode: i as i32 % 3,
                uid: optional,
                gid: optional.map(|x| x.wrapping_add(1)),
                read_fd: optional,
            };
            assert_eq!(encode_entry(&entry), entry.encode_to_vec(), "{entry:?}");
            let back = AutofsEntry::decode(encode_entry(&entry).as_slice()).unwrap();
            assert_eq!(back, entry);
        }
    }
}

#[test]
fn zero_required_fields_are_still_encoded() {
    let entry = AutofsEntry {
        fd: 0,
        pgrp: 0,
        timeout: 0,
        minproto: 0,
        maxproto: 0,
        mode: 0,
        uid: None,
        gid: None,
        read_fd: None,
    };
    // Six required fields, tag + one-byte zero each.
    assert_eq!(
        encode_entry(&entry),
        [8, 0, 16, 0, 24, 0, 32, 0, 40, 0, 48, 0]
    );
}
