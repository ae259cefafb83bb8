//! Response metadata saying how old the scan behind an answer is, and whether it is the last
//! good one of a stalled scan.

use tonic::Response;

use crate::snapshot::Answer;

/// Initial metadata of ListMounts and CheckMigratable: age of the scan answered from (ms).
pub const SCAN_AGE_HEADER: &str = "autofs-scan-age-ms";
/// Initial metadata set (`true`) when the answer comes from the last good scan because the
/// current one has stalled.
pub const STALE_HEADER: &str = "autofs-scan-stale";

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
