pub mod backend;
pub mod direct;
pub mod objects;
pub mod uploader;
