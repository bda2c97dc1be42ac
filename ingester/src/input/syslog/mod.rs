pub mod server;
pub mod tls;
