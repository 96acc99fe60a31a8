//! One test binary: the real identity server and the example protected service, both
//! in-process on ephemeral ports, driven through real gRPC clients.

mod helpers;
mod policy;
mod revocation;
mod rotation;
mod tokens;
#[path = "../../../examples/protected-service/whoami.rs"]
mod whoami;
