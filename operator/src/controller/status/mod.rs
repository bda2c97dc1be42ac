//! Status conditions and what they are computed from: the ingester pods'
//! reports of archive freshness and writability, the alert rules, and the
//! compaction runs.

pub(crate) mod alerts;
pub(crate) mod compaction;
pub(crate) mod conditions;
pub(crate) mod freshness;
pub(crate) mod writable;
