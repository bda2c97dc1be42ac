//! drainpipe operator library.
