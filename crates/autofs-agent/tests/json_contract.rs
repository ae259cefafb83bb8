//! The CLI's JSON must use exactly the field names of `autofs.v1.MountReport` (and CRIU's
//! `autofs_entry`), so programs can read either interchangeably.

use std::collections::BTreeSet;

use autofs_core::{AutofsEntry, MountReport, MountState, Reason};
use prost::Message;
use prost_types::FileDescriptorSet;

fn proto_fields(message: &str) -> BTreeSet<String> {
    let set = FileDescriptorSet::decode(autofs_api::FILE_DESCRIPTOR_SET).unwrap();
    let (package, name) = message.rsplit_once('.').unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == package)
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("{message} not in the descriptor set"))
        .field
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
}

fn json_keys(value: &serde_json::Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn sample() -> MountReport {
    MountReport {
        node: "n".into(),
        mount_id: 40,
        parent_id: 25,
        mount_point: "/caf\\xe9".into(),
        mount_point_bytes: b"/caf\xe9".to_vec(),
        source: "map".into(),
        source_bytes: b"map".to_vec(),
        root: "/".into(),
        root_bytes: b"/".to_vec(),
        major: 0,
        minor: 52,
        criu_s_dev: 52,
        mnt_ns: 4026531841,
        state: MountState::Active,
        reason: Reason::MasterHoldsPipe,
        message: "m".into(),
        entry: Some(AutofsEntry {
            fd: 5,
            pgrp: 1,
            timeout: 0,
            minproto: 5,
            maxproto: 5,
            mode: 1,
            uid: Some(1),
            gid: Some(2),
            read_fd: Some(3),
        }),
        pipe_ino: 7,
        host_pgrp: 9,
        pending_bytes: 0,
        pending_packets: 0,
        read_end_pid: 9,
        read_end_fd: 3,
        write_end_held: false,
        strictexpire: false,
        ignore: false,
        container_id: String::new(),
        pod_uid: String::new(),
        owner_pid: 1,
        criu_notes: vec![],
        options: "fd=5".into(),
        proto_version: 5,
        timeout: 0,
        dumpable: true,
        blocks_when_external: false,
    }
}

#[test]
fn json_report_fields_are_exactly_the_proto_mount_report_fields() {
    let json = serde_json::to_value(sample()).unwrap();
    assert_eq!(json_keys(&json), proto_fields("autofs.v1.MountReport"));
}

#[test]
fn json_entry_fields_are_exactly_criu_autofs_entry_fields() {
    let json = serde_json::to_value(sample()).unwrap();
    assert_eq!(json_keys(&json["entry"]), proto_fields("criu.autofs_entry"));
}

#[test]
fn json_states_and_reasons_are_the_proto_enum_names_without_prefix() {
    for state in MountState::ALL {
        let proto = autofs_api::v1::MountState::from_str_name(&format!("MOUNT_STATE_{state}"));
        assert!(proto.is_some(), "{state} is not a proto MountState");
        assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
    }
    let mut report = sample();
    report.reason = Reason::ReadEndDelegated;
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["reason"], "READ_END_DELEGATED");
    assert!(autofs_api::v1::Reason::from_str_name("REASON_READ_END_DELEGATED").is_some());
}

#[test]
fn json_bytes_fields_are_base64_as_in_proto3_json() {
    let json = serde_json::to_value(sample()).unwrap();
    // base64("/caf\xe9") and base64("map"), as the proto3 JSON mapping writes `bytes`.
    assert_eq!(json["mount_point_bytes"], "L2NhZuk=");
    assert_eq!(json["source_bytes"], "bWFw");
    assert_eq!(json["root_bytes"], "Lw==");
    assert_eq!(json["root"], "/");
    assert_eq!(json["mount_point"], "/caf\\xe9");
}

#[test]
fn every_json_answer_of_the_api_has_exactly_its_proto_fields() {
    use autofs_api::v1;
    macro_rules! keys {
        ($message:expr) => {
            json_keys(&serde_json::to_value($message).unwrap())
        };
    }
    let event = v1::MountEvent {
        mount: Some(v1::MountReport::default()),
        ..Default::default()
    };
    assert_eq!(keys!(&event), proto_fields("autofs.v1.MountEvent"));
    assert_eq!(
        keys!(v1::CheckMigratableResponse::default()),
        proto_fields("autofs.v1.CheckMigratableResponse")
    );
    assert_eq!(
        keys!(v1::WaitMigratableResponse::default()),
        proto_fields("autofs.v1.WaitMigratableResponse")
    );
    assert_eq!(
        keys!(v1::GetNodeInfoResponse::default()),
        proto_fields("autofs.v1.GetNodeInfoResponse")
    );
    let event = serde_json::to_value(&event).unwrap();
    assert_eq!(
        (&event["kind"], &event["mount"]["state"]),
        (&"UNSPECIFIED".into(), &"UNSPECIFIED".into())
    );
    // The core report and its wire message write the same JSON.
    let wire = v1::MountReport::from(&sample());
    assert_eq!(
        serde_json::to_value(&wire).unwrap(),
        serde_json::to_value(sample()).unwrap()
    );
}
