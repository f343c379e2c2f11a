//! The native protocol: JSON text frames (docs/protocol.md).
//!
//! [`command`] parses what clients send, naming the exact field that is
//! wrong; [`frames`] encodes replies and pushes, each exactly once.

pub mod command;
pub mod frames;

pub use command::{Command, Incoming, Rejected};
