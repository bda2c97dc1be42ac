//! drainpipe operator library.

pub mod glue;
pub mod heroku;
pub mod ratelimit;
