pub mod batch;
pub(crate) mod record;
