//! Shared helpers for drainpipe end-to-end tests.

pub mod env;
pub mod heroku_fake;
pub mod operator;
