pub mod alerts;
pub mod health;
pub mod metrics;
