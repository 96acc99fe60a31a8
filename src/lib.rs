//! identity: sign users up, log them in, and tell other services who is behind a token.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod connections;
pub mod domain;
pub mod error;
pub mod hash_pool;
pub mod health;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod passwords;
pub mod rpc;
pub mod sealing;
pub mod secret_files;
pub mod service;
pub mod startup;
pub mod store;
pub mod supervisor;
pub mod telemetry;
#[cfg(feature = "test-helpers")]
pub mod testing;
pub mod tokens;
pub mod transfer;
pub mod transport;

pub use rpc::proto;
