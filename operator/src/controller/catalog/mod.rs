//! The catalog side: the Glue table's partition projection, and the bucket's
//! retention.

pub(crate) mod glue;
pub(crate) mod retention;
