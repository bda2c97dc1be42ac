//! The Heroku side: each listed app's drain of the kind its generation takes,
//! found, created, repaired or removed, within the account's request budget.

pub(crate) mod backoff;
pub(crate) mod drains;
pub(crate) mod drift;
pub(crate) mod identity;
pub(crate) mod log_drains;
pub(crate) mod pacing;
pub(crate) mod removal;
pub(crate) mod report;
pub(crate) mod retain;
pub(crate) mod suspend;
pub(crate) mod telemetry_drains;
pub(crate) mod token;
