//! What Check reads of Envoy's `CheckRequest`: the `authorization` header of the HTTP request it
//! asks about, from `attributes.request.http.headers` (or `header_map`, when Envoy is configured
//! with `encode_raw_headers`). Every other field is skipped as protobuf decoding skips a field it
//! does not know (its wire format still checked), so a request carrying every header of a
//! browser's request costs a walk over its bytes: no map, no string for a header nobody reads.
//! The field numbers are Envoy's (`service/auth/v3/external_auth.proto`,
//! `attribute_context.proto`, `config/core/v3/base.proto`); the tests below decode what
//! envoy-types' own `CheckRequest` encodes.

use prost::{
    Message,
    bytes::{Buf, BufMut, Bytes},
    encoding::{DecodeContext, WireType, message, skip_field},
};

/// The header Check reads.
const AUTHORIZATION: &[u8] = b"authorization";

/// `envoy.service.auth.v3.CheckRequest`, decoded for what Check reads.
#[derive(Clone, PartialEq, Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    attributes: Option<AttributeContext>,
}

/// `AttributeContext`: only `request`.
#[derive(Clone, PartialEq, Message)]
struct AttributeContext {
    #[prost(message, optional, tag = "4")]
    request: Option<AttributeRequest>,
}

/// `AttributeContext.Request`: only `http`.
#[derive(Clone, PartialEq, Message)]
struct AttributeRequest {
    #[prost(message, optional, tag = "2")]
    http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`: the `authorization` value of `headers` (a map, field 3) and
/// of `header_map` (field 13), nothing else.
#[derive(Clone, Default, PartialEq)]
struct HttpRequest {
    /// From `headers`: the last entry named so, as a map keeps it.
    authorization: Option<Bytes>,
    /// From `header_map`: the first one named so.
    raw_authorization: Option<Bytes>,
}

/// A `headers` entry (a map entry on the wire), or a `HeaderValue` of `header_map`: key, value
/// and, in the latter, `raw_value` (field 3), which Envoy fills instead of `value`.
#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct Header {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    raw_value: Bytes,
}

impl Header {
    /// The header at the front of `buf`, kept only if it is `authorization` (in any case).
    fn merge_authorization(
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<Option<Self>, prost::DecodeError> {
        let mut header = Self::default();
        message::merge(wire_type, &mut header, buf, ctx)?;
        Ok(header.key.eq_ignore_ascii_case(AUTHORIZATION).then_some(header))
    }

    fn authorization(value: &Bytes) -> Self {
        Self { key: Bytes::from_static(AUTHORIZATION), value: value.clone(), raw_value: Bytes::new() }
    }
}

/// `config.core.v3.HeaderMap`: its first `authorization` header's value.
#[derive(Clone, Default, PartialEq)]
struct HeaderMap {
    authorization: Option<Bytes>,
}

const HEADERS: u32 = 3;
const HEADER_MAP: u32 = 13;
const HEADER_MAP_HEADERS: u32 = 1;

impl Message for HttpRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(value) = &self.authorization {
            message::encode(HEADERS, &Header::authorization(value), buf);
        }
        if let Some(value) = &self.raw_authorization {
            message::encode(HEADER_MAP, &HeaderMap { authorization: Some(value.clone()) }, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            HEADERS => {
                if let Some(header) = Header::merge_authorization(wire_type, buf, ctx)? {
                    self.authorization = Some(header.value);
                }
                Ok(())
            }
            HEADER_MAP => {
                let mut map = HeaderMap::default();
                message::merge(wire_type, &mut map, buf, ctx)?;
                if self.raw_authorization.is_none() {
                    self.raw_authorization = map.authorization;
                }
                Ok(())
            }
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.authorization
            .as_ref()
            .map_or(0, |value| message::encoded_len(HEADERS, &Header::authorization(value)))
            + self.raw_authorization.as_ref().map_or(0, |value| {
                message::encoded_len(HEADER_MAP, &HeaderMap { authorization: Some(value.clone()) })
            })
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for HeaderMap {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(value) = &self.authorization {
            message::encode(HEADER_MAP_HEADERS, &Header::authorization(value), buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != HEADER_MAP_HEADERS {
            return skip_field(wire_type, tag, buf, ctx);
        }
        let header = Header::merge_authorization(wire_type, buf, ctx)?;
        if self.authorization.is_none() {
            // Envoy sets `raw_value` in this form; `value` in older versions.
            self.authorization = header
                .map(|header| if header.raw_value.is_empty() { header.value } else { header.raw_value });
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.authorization
            .as_ref()
            .map_or(0, |value| message::encoded_len(HEADER_MAP_HEADERS, &Header::authorization(value)))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl CheckRequest {
    /// The `authorization` header's value from `headers`, else from `header_map` (lower-case
    /// names from Envoy; any case here). Bytes: a value that is not UTF-8 is no bearer token,
    /// which Check answers with a denial rather than a gRPC error.
    pub fn authorization(&self) -> Option<&[u8]> {
        let http = self.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
        http.authorization.as_deref().or(http.raw_authorization.as_deref())
    }
}

/// The value is a credential: never printed.
impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("authorization", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("raw_authorization", &self.raw_authorization.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl std::fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderMap")
            .field("authorization", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::{
        config::core::v3::{Address, HeaderMap as EnvoyHeaderMap, HeaderValue},
        service::auth::v3::{
            AttributeContext, CheckRequest as EnvoyCheckRequest,
            attribute_context::{HttpRequest as EnvoyHttpRequest, Peer, Request},
        },
    };

    use super::*;

    /// Envoy's request for `GET /orders/42` with these headers, and the other attributes Envoy
    /// fills in (peers, context extensions, a body), which decoding skips.
    fn envoy_request(headers: &[(&str, &str)], header_map: &[(&str, &[u8])]) -> Vec<u8> {
        let http = EnvoyHttpRequest {
            id: "17".into(),
            method: "GET".into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            header_map: (!header_map.is_empty()).then(|| EnvoyHeaderMap {
                headers: header_map
                    .iter()
                    .map(|(key, raw)| HeaderValue {
                        key: key.to_string(),
                        raw_value: raw.to_vec(),
                        ..HeaderValue::default()
                    })
                    .collect(),
            }),
            path: "/orders/42".into(),
            host: "shop.example.com".into(),
            body: "{\"q\":1}".into(),
            size: 7,
            ..EnvoyHttpRequest::default()
        };
        let peer =
            Peer { address: Some(Address::default()), principal: "spiffe://x".into(), ..Peer::default() };
        EnvoyCheckRequest {
            attributes: Some(AttributeContext {
                source: Some(peer.clone()),
                destination: Some(peer),
                request: Some(Request { http: Some(http), ..Request::default() }),
                context_extensions: HashMap::from([("route".to_owned(), "orders".to_owned())]),
                ..AttributeContext::default()
            }),
        }
        .encode_to_vec()
    }

    fn authorization(bytes: &[u8]) -> Option<Vec<u8>> {
        CheckRequest::decode(bytes).expect("decodes").authorization().map(<[u8]>::to_vec)
    }

    #[test]
    fn the_authorization_header_is_read_among_the_others() {
        let headers =
            [(":path", "/orders/42"), ("authorization", "Bearer abc"), ("cookie", "x=1"), ("accept", "*/*")];
        assert_eq!(authorization(&envoy_request(&headers, &[])), Some(b"Bearer abc".to_vec()));
        // Any case, though Envoy sends lower case.
        assert_eq!(
            authorization(&envoy_request(&[("Authorization", "Bearer A")], &[])),
            Some(b"Bearer A".to_vec())
        );
        assert_eq!(authorization(&envoy_request(&[("accept", "*/*")], &[])), None);
        assert_eq!(authorization(&EnvoyCheckRequest::default().encode_to_vec()), None);
    }

    #[test]
    fn the_raw_header_map_is_read_when_headers_has_none() {
        let raw: &[(&str, &[u8])] =
            &[("accept", b"*/*"), ("authorization", b"Bearer raw"), ("authorization", b"Bearer 2")];
        assert_eq!(authorization(&envoy_request(&[], raw)), Some(b"Bearer raw".to_vec()));
        assert_eq!(
            authorization(&envoy_request(&[("authorization", "Bearer map")], raw)),
            Some(b"Bearer map".to_vec())
        );
        let not_text: &[(&str, &[u8])] = &[("authorization", b"Bearer \xff")];
        assert_eq!(authorization(&envoy_request(&[], not_text)), Some(b"Bearer \xff".to_vec()));
    }

    #[test]
    fn what_is_kept_encodes_back_and_never_prints() {
        let request =
            CheckRequest::decode(envoy_request(&[("authorization", "Bearer secret")], &[]).as_slice())
                .unwrap();
        let again = CheckRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(again, request);
        assert!(!format!("{request:?}").contains("secret"), "{request:?}");
    }

    fn delimited(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
        prost::encoding::encode_key(tag, WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(bytes.len() as u64, buf);
        buf.extend_from_slice(bytes);
    }

    /// `entry` (encoded fields) as a `headers` entry of a CheckRequest: in HttpRequest.headers
    /// (3), in Request.http (2), in AttributeContext.request (4), in CheckRequest.attributes (1).
    fn in_headers(entry: Vec<u8>) -> Vec<u8> {
        [HEADERS, 2, 4, 1].into_iter().fold(entry, |inner, tag| {
            let mut outer = Vec::new();
            delimited(tag, &inner, &mut outer);
            outer
        })
    }

    /// A `headers` entry of these length-delimited fields, in this order.
    fn in_headers_entry(fields: &[(u32, &[u8])]) -> Vec<u8> {
        let mut entry = Vec::new();
        for (tag, bytes) in fields {
            delimited(*tag, bytes, &mut entry);
        }
        in_headers(entry)
    }

    #[test]
    fn the_last_key_of_a_header_entry_decides_in_any_order_of_fields() {
        let value_first = in_headers_entry(&[(2, b"Bearer early"), (1, b"authorization")]);
        assert_eq!(authorization(&value_first), Some(b"Bearer early".to_vec()));
        let other = in_headers_entry(&[(2, b"Bearer early"), (1, b"cookie")]);
        assert_eq!(authorization(&other), None);
        // The last key counts, as on the wire: an entry renamed away is no authorization.
        let renamed = in_headers_entry(&[(1, b"authorization"), (2, b"Bearer x"), (1, b"cookie")]);
        assert_eq!(authorization(&renamed), None);
    }

    #[test]
    fn a_request_split_across_chunks_reads_the_same() {
        let bytes = envoy_request(&[("accept", "*/*"), ("authorization", "Bearer split")], &[]);
        for at in 0..=bytes.len() {
            let chained = bytes[..at].chain(&bytes[at..]);
            let request = CheckRequest::decode(chained).expect("decodes");
            assert_eq!(request.authorization(), Some(&b"Bearer split"[..]), "split at {at}");
        }
    }

    #[test]
    fn a_header_field_of_the_wrong_wire_type_does_not_decode() {
        // The `value` of a header nobody reads, sent as a varint: envoy-types refuses it too.
        let mut entry = Vec::new();
        delimited(1, b"cookie", &mut entry);
        prost::encoding::encode_key(2, WireType::Varint, &mut entry);
        prost::encoding::encode_varint(1, &mut entry);
        let request = in_headers(entry);
        assert!(EnvoyCheckRequest::decode(request.as_slice()).is_err());
        assert!(CheckRequest::decode(request.as_slice()).is_err());
    }

    #[test]
    fn bytes_that_are_no_check_request_do_not_decode() {
        // Each also fails as envoy-types' CheckRequest: field 1 as a varint, a truncated field, a
        // truncated key, an unknown field opening groups past the recursion limit.
        for bytes in [vec![0x08, 0x01], vec![0x0a, 0x10, b'a'], vec![0xff; 16], vec![0x2b; 200]] {
            assert!(EnvoyCheckRequest::decode(bytes.as_slice()).is_err(), "{bytes:?}");
            assert!(CheckRequest::decode(bytes.as_slice()).is_err(), "{bytes:?}");
        }
    }
}
