//! Status conditions and what they are computed from: the ingester pods'
//! reports of archive freshness and writability, and the alert rules.

pub(crate) mod alerts;
pub(crate) mod conditions;
pub(crate) mod freshness;
pub(crate) mod writable;
