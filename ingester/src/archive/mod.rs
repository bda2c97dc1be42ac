pub(crate) mod backend;
pub(crate) mod direct;
pub mod objects;
pub(crate) mod probe;
pub(crate) mod store;
pub(crate) mod uploader;
