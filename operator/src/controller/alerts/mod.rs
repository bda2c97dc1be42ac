//! `spec.alerts`: the rules with their Secrets resolved, for the routes
//! Secret the ingesters re-read, and the rules that cannot run, for the
//! `AlertsReady` condition (status/alerts.rs).

pub(crate) mod render;
pub(crate) mod resolve;
