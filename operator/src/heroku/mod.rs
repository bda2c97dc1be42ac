//! Heroku Platform API v3 client for log drains and telemetry drains.
//!
//! Only the calls the operator needs: App Info (id and generation), list
//! (with `Range` pagination), create, info and delete of an app's log drains,
//! and the telemetry-drain calls of Fir apps ([`telemetry`]). Every request goes through one
//! [`RateLimiter`] shared by all clones of a [`HerokuClient`], since Heroku's
//! budget (4,500 requests an hour) belongs to the account, not to a reconcile.
//!
//! Drain URLs carry the ingester's basic-auth password. [`DrainUrl`] masks it
//! in `Debug` and `Display`, and [`HerokuError`] messages are scrubbed of the
//! API token and of any URL credentials before they are built, so an error can
//! go into a status condition or an event as it is.
//!
//! This module keeps what every call shares: the base URL, the `Accept`
//! variants and the mask. Its files hold the secrets and their masking
//! (`secret`), the errors (`error`), the Platform API's objects
//! (`schema`), the client and how it sends (`client`), and the calls on
//! log drains (`log_drains`) and telemetry drains (`telemetry`).

use reqwest::Url;

pub use crate::ratelimit::{RateLimitConfig, RateLimitSnapshot, RateLimiter};

mod client;
mod error;
mod log_drains;
mod schema;
mod secret;
mod telemetry;
pub use client::{HerokuClient, HerokuOptions};
pub use error::HerokuError;
pub use log_drains::EnsuredDrain;
pub use schema::{AppInfo, AppRef, Drain, DrainAddon, Generation, GenerationRef};
pub use secret::{ApiToken, DrainUrl};
pub use telemetry::{
    ExporterHeaders, ExporterType, TelemetryDrain, TelemetryExporter, TelemetryOwner,
    WantedExporter,
};

/// Heroku's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.heroku.com";

/// The media type that selects version 3 of the Platform API.
pub(crate) const ACCEPT_V3: &str = "application/vnd.heroku+json; version=3";

/// Version 3's `sdk` variant: what the Heroku CLI sends for App Info and
/// every telemetry-drain call. Only this variant's App Info carries
/// `generation`; a plain `version=3` answer leaves it out.
pub(crate) const ACCEPT_V3_SDK: &str = "application/vnd.heroku+json; version=3.sdk";

/// The `Accept` variant of one call, chosen as Heroku's own clients choose
/// it (docs/architecture.md, "Heroku Platform API calls").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// `version=3`: log drains (`heroku drains`, heroku-go, Terraform).
    V3,
    /// `version=3.sdk`: App Info (for `generation`) and telemetry drains
    /// (`heroku telemetry:*`).
    Sdk,
}

impl Variant {
    fn accept(self) -> &'static str {
        match self {
            Variant::V3 => ACCEPT_V3,
            Variant::Sdk => ACCEPT_V3_SDK,
        }
    }
}

/// Where one call goes: the URL and the `Accept` variant it is sent with.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    url: Url,
    variant: Variant,
}

/// What replaces a secret wherever one would otherwise be shown.
pub(crate) const MASK: &str = "****";

/// `drainpipe-operator/<crate version>`.
pub(crate) fn default_user_agent() -> String {
    format!("drainpipe-operator/{}", env!("CARGO_PKG_VERSION"))
}
