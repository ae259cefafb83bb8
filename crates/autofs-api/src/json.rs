//! The one JSON shape of the API's answers, shared by the wire types, `autofs-agent scan --json`
//! and the controller's `--output json`: the proto's field names; every field written, CRIU's
//! absent optional `autofs_entry` fields left out; enums as their value names without the
//! enum's prefix (`"state": "ACTIVE"` for `MOUNT_STATE_ACTIVE`), a value this build does not
//! know as `UNKNOWN(n)`; `bytes` as standard base64, as proto3's JSON mapping writes them.
//!
//! Unlike proto3's canonical JSON, 64-bit integers are numbers and enum names are short: the
//! shape the agent's CLI has written since its first release. Reading accepts that shape, and
//! also full value names, enum numbers and URL-safe or unpadded base64.
//!
//! `build.rs` attaches the modules below to the generated fields.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserializer, Serializer, de};

use crate::v1;

/// An `autofs.v1` enum, named in JSON by its value names without the enum's prefix.
pub trait ShortName: Copy + TryFrom<i32> + Into<i32> {
    /// The proto's prefix of every value name of this enum (`MOUNT_STATE_`).
    const PREFIX: &'static str;
    /// The enum's name in the proto, for error messages.
    const ENUM: &'static str;

    /// The value's full name in the proto (`MOUNT_STATE_ACTIVE`).
    fn proto_name(self) -> &'static str;

    /// The value named `name` in the proto, prefix included.
    fn from_proto_name(name: &str) -> Option<Self>;

    /// The value's name without the prefix (`ACTIVE`), as JSON and tables write it.
    fn short_name(self) -> &'static str {
        let name = self.proto_name();
        name.strip_prefix(Self::PREFIX).unwrap_or(name)
    }

    /// The value whose short name (`ACTIVE`) or full name (`MOUNT_STATE_ACTIVE`) is `name`.
    fn from_short_name(name: &str) -> Option<Self> {
        Self::from_proto_name(&format!("{}{name}", Self::PREFIX))
            .or_else(|| Self::from_proto_name(name))
    }
}

macro_rules! short_name {
    ($enum:ty, $name:literal, $prefix:literal) => {
        impl ShortName for $enum {
            const PREFIX: &'static str = $prefix;
            const ENUM: &'static str = $name;

            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }

            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
        }
    };
}

short_name!(v1::MountState, "MountState", "MOUNT_STATE_");
short_name!(v1::Reason, "Reason", "REASON_");
short_name!(v1::TaskReason, "TaskReason", "TASK_REASON_");
short_name!(v1::mount_event::Kind, "MountEvent.Kind", "KIND_");
short_name!(
    v1::wait_migratable_response::Outcome,
    "WaitMigratableResponse.Outcome",
    "OUTCOME_"
);

/// The JSON name of the enum value `value` (a message's raw field): its short name, or
/// `UNKNOWN(n)` for a number this build does not know (an agent newer than this client).
pub fn name<E: ShortName>(value: i32) -> Cow<'static, str> {
    match E::try_from(value) {
        Ok(e) => Cow::Borrowed(e.short_name()),
        Err(_) => Cow::Owned(format!("UNKNOWN({value})")),
    }
}

/// The enum number named `name` in JSON: a short or full value name, or `UNKNOWN(n)`.
///
/// # Errors
///
/// A message naming the enum when `name` is none of these.
pub fn parse<E: ShortName>(name: &str) -> Result<i32, String> {
    if let Some(e) = E::from_short_name(name) {
        return Ok(e.into());
    }
    name.strip_prefix("UNKNOWN(")
        .and_then(|n| n.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("`{name}` is not a value of autofs.v1.{}", E::ENUM))
}

struct EnumVisitor<E>(std::marker::PhantomData<E>);

impl<E: ShortName> de::Visitor<'_> for EnumVisitor<E> {
    type Value = i32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value name or number of autofs.v1.{}", E::ENUM)
    }

    fn visit_str<Err: de::Error>(self, v: &str) -> Result<i32, Err> {
        parse::<E>(v).map_err(Err::custom)
    }

    fn visit_i64<Err: de::Error>(self, v: i64) -> Result<i32, Err> {
        i32::try_from(v).map_err(|_| Err::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_u64<Err: de::Error>(self, v: u64) -> Result<i32, Err> {
        i32::try_from(v).map_err(|_| Err::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
}

fn serialize_enum<E: ShortName, S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&name::<E>(*value))
}

fn deserialize_enum<'de, E: ShortName, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    d.deserialize_any(EnumVisitor::<E>(std::marker::PhantomData))
}

macro_rules! enum_field {
    ($module:ident, $enum:ty) => {
        #[doc = concat!("serde `with` module of a `", stringify!($enum), "` field (an `i32`).")]
        pub mod $module {
            /// Writes the value's short name.
            ///
            /// # Errors
            ///
            /// The serializer's.
            pub fn serialize<S: serde::Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
                super::serialize_enum::<$enum, S>(value, s)
            }

            /// Reads a value name or number.
            ///
            /// # Errors
            ///
            /// A name that is no value of the enum, or a number beyond `i32`.
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                super::deserialize_enum::<$enum, D>(d)
            }
        }
    };
}

enum_field!(mount_state, crate::v1::MountState);
enum_field!(reason, crate::v1::Reason);
enum_field!(task_reason, crate::v1::TaskReason);
enum_field!(mount_event_kind, crate::v1::mount_event::Kind);
enum_field!(outcome, crate::v1::wait_migratable_response::Outcome);

/// serde `with` module of a `bytes` field: standard base64 with padding, as proto3's JSON
/// mapping writes `bytes`.
pub mod base64 {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, engine::general_purpose::STANDARD};
    use serde::{Deserialize as _, Deserializer, Serializer, de};

    const ANY_PADDING: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);

    /// Writes the bytes as standard base64.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads standard or URL-safe base64, padded or not.
    ///
    /// # Errors
    ///
    /// A string that is neither.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        GeneralPurpose::new(&alphabet::STANDARD, ANY_PADDING)
            .decode(text.as_bytes())
            .or_else(|_| {
                GeneralPurpose::new(&alphabet::URL_SAFE, ANY_PADDING).decode(text.as_bytes())
            })
            .map_err(|e| de::Error::custom(format!("invalid base64 in a bytes field: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_read_back_from_short_and_full_names_and_numbers() {
        assert_eq!(name::<v1::MountState>(1), "ACTIVE");
        assert_eq!(name::<v1::Reason>(5), "READ_END_DELEGATED");
        assert_eq!(name::<v1::mount_event::Kind>(3), "REMOVED");
        assert_eq!(name::<v1::MountState>(99), "UNKNOWN(99)");
        assert_eq!(parse::<v1::MountState>("INTERIM"), Ok(3));
        assert_eq!(parse::<v1::MountState>("MOUNT_STATE_INTERIM"), Ok(3));
        assert_eq!(parse::<v1::MountState>("UNKNOWN(99)"), Ok(99));
        let err = parse::<v1::MountState>("SLEEPY").unwrap_err();
        assert_eq!(err, "`SLEEPY` is not a value of autofs.v1.MountState");
        let r: v1::MountReport = serde_json::from_str(r#"{"state": 4, "reason": "LEADER_GONE"}"#)
            .expect("numbers and names both read");
        assert_eq!(
            (r.state(), r.reason()),
            (v1::MountState::Orphaned, v1::Reason::LeaderGone)
        );
    }

    #[test]
    fn every_message_field_is_written_and_reads_back_equal() {
        let report = v1::MountReport {
            node: "n".into(),
            mount_point: "/caf\\xe9".into(),
            mount_point_bytes: b"/caf\xe9".to_vec(),
            state: v1::MountState::Catatonic.into(),
            entry: Some(crate::criu::AutofsEntry {
                fd: -1,
                uid: Some(0),
                ..Default::default()
            }),
            criu_notes: vec!["note".into()],
            ..Default::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["mount_point_bytes"], "L2NhZuk=");
        assert_eq!(json["source_bytes"], "");
        assert_eq!(json["state"], "CATATONIC");
        assert_eq!(json["reason"], "UNSPECIFIED");
        assert_eq!(json["entry"]["uid"], 0);
        assert!(json["entry"].get("gid").is_none(), "{json}");
        assert_eq!(json.as_object().unwrap().len(), 35, "{json}");
        let back: v1::MountReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn bad_json_values_are_clear_errors() {
        let err = serde_json::from_str::<v1::MountReport>(r#"{"state": "SLEEPY"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("`SLEEPY` is not a value of autofs.v1.MountState"),
            "{err}"
        );
        let err = serde_json::from_str::<v1::MountReport>(r#"{"source_bytes": "*"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid base64"), "{err}");
        let unpadded: v1::MountReport =
            serde_json::from_str(r#"{"mount_point_bytes": "L2NhZuk"}"#).unwrap();
        assert_eq!(unpadded.mount_point_bytes, b"/caf\xe9");
    }
}
