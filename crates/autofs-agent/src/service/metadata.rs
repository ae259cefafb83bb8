//! Response metadata saying how old the scan behind an answer is, and whether it is the last
//! good one of a stalled scan.

use tonic::Response;

use crate::snapshot::Answer;

/// The headers are the API's (clients read them with the same names).
pub use autofs_api::{SCAN_AGE_HEADER, STALE_HEADER};

/// Marks `response` with the age of `answer`, and as stale when it is.
pub(super) fn mark_age<T>(response: &mut Response<T>, answer: &Answer) {
    let age_ms = u64::try_from(answer.age().as_millis()).unwrap_or(u64::MAX);
    let md = response.metadata_mut();
    md.insert(SCAN_AGE_HEADER, age_ms.into());
    if answer.stale {
        md.insert(
            STALE_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
}
