//! One integration test binary: the real server, a real gRPC client, every behaviour on SQLite
//! and (when IDENTITY_TEST_POSTGRES_URL is set) on Postgres.

mod helpers;

mod admin;
mod admin_events;
mod algorithms;
mod audit;
mod callers;
mod cli;
mod connections;
mod devices;
mod events;
mod ext_authz;
mod health;
mod import;
mod import_events;
mod lockout;
mod login;
mod mail;
mod malformed;
mod metrics;
mod mfa;
mod otlp;
mod outage;
mod overload;
mod recovery;
mod replicas;
mod secrets;
mod sessions;
mod signup;
mod smtp;
mod system;
mod tokens;
mod traces;
mod transport;
mod tricky_text;
mod users;
mod verification;
mod watch;
mod well_known;
