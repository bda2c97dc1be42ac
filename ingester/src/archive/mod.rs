pub(crate) mod backend;
pub(crate) mod direct;
pub(crate) mod probe;
pub mod objects;
pub(crate) mod uploader;
