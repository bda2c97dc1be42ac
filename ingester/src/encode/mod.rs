pub mod batch;
pub mod record;
