//! The gRPC methods this server serves, by their full path (`/package.Service/Method`), read
//! from the same generated descriptor sets that reflection serves. Anything else a caller sends
//! a request to is answered UNIMPLEMENTED and must not become a label, a map key or anything else
//! that grows with the number of distinct paths a stranger can invent.

use std::sync::LazyLock;

use prost::Message;
use prost_types::FileDescriptorSet;

/// The encoded descriptor sets of every service the server can run.
pub const SERVED_DESCRIPTOR_SETS: [&[u8]; 4] = [
    super::proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Served methods whose descriptors are not compiled in (envoy-types ships none).
const SERVED_WITHOUT_DESCRIPTORS: [&str; 1] = ["/envoy.service.auth.v3.Authorization/Check"];

/// The label of every path that names no served method.
pub const OTHER: &str = "other";

/// Sorted and without repeats, for a lookup that compares a few strings rather than hashing the
/// path: every RPC asks, and the set is small and fixed.
static KNOWN: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut known = methods_of(&SERVED_DESCRIPTOR_SETS);
    known.extend(SERVED_WITHOUT_DESCRIPTORS.iter().map(|path| (*path).to_owned()));
    known.sort_unstable();
    known.dedup();
    known
});

/// `path` itself if it names a served method, else [`OTHER`]: a bounded label value.
pub fn label(path: &str) -> &'static str {
    let known: &'static [String] = &KNOWN;
    known.binary_search_by(|method| method.as_str().cmp(path)).map_or(OTHER, |at| known[at].as_str())
}

/// Every `/package.Service/Method` path declared in `sets`. A set that does not decode (it is
/// compiled in, so it cannot) contributes nothing, and its methods are labelled `other`.
fn methods_of(sets: &[&[u8]]) -> Vec<String> {
    let mut methods = Vec::new();
    for set in sets {
        let Ok(set) = FileDescriptorSet::decode(*set) else {
            tracing::error!("a compiled-in descriptor set does not decode");
            continue;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = match package {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    methods.push(format!("/{service_name}/{}", method.name()));
                }
            }
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_are_their_own_label_and_anything_else_is_other() {
        for path in [
            "/identity.v1.AuthService/Login",
            "/identity.v1.TokenService/WatchRevocations",
            "/identity.v1.UserService/GetCurrentUser",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            "/envoy.service.auth.v3.Authorization/Check",
        ] {
            assert_eq!(label(path), path);
        }
        for path in ["/grpc.health.v1.Health/Nope", "/identity.v1.AuthService/", "/x", "", "/grpc."] {
            assert_eq!(label(path), "other", "{path}");
        }
    }
}
