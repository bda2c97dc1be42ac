//! drainpipe operator library: the `LogDrain` resource and the controller
//! that turns it into Heroku drains, a Glue table and ingester Deployments.

mod backoff;
pub mod controller;
pub mod crd;
pub mod error;
pub mod glue;
pub mod heroku;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod ratelimit;
pub mod resources;
pub mod telemetry;
