//! The client of the echo, ValidateToken-repeated and ext_authz Check rows: it sends a request
//! encoded once and reads only the field it checks (`active`; Check's status code), the rest of
//! the answer skipped as unknown fields are. Envoy encodes its CheckRequest and reads the
//! CheckResponse on its own cores, and a caller of ValidateToken may read only `active`; here
//! the client shares the server's two cores, so a client that built and decoded whole messages
//! charged each row for work of a size that differs between them (a map of seven headers and
//! four header mutations for Check, a claims message for the others) and is not the server's.
//! Every row pays the same client: one copy of its bytes into the frame, one field read.

use std::marker::PhantomData;

use http::uri::PathAndQuery;
use prost::{
    Message,
    bytes::{BufMut, Bytes},
};
use tonic::{
    Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

/// One unary method called with the same encoded request each time.
#[derive(Clone)]
pub struct Unary {
    path: PathAndQuery,
    body: Bytes,
}

impl Unary {
    /// `path` (`/package.Service/Method`) with `request`, encoded here once.
    pub fn new(path: &'static str, request: &impl Message) -> Self {
        Self { path: PathAndQuery::from_static(path), body: request.encode_to_vec().into() }
    }

    /// Calls the method on `channel` and decodes the answer as `T` (only the fields `T` names).
    pub async fn call<T: Message + Default + Send + 'static>(&self, channel: Channel) -> Result<T, Status> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|error| Status::unavailable(error.to_string()))?;
        let response =
            grpc.unary(Request::new(self.body.clone()), self.path.clone(), Lean::<T>::default()).await?;
        Ok(response.into_inner())
    }
}

/// `ValidateTokenResponse.active` (field 1), the rest skipped.
#[derive(Clone, PartialEq, Message)]
pub struct Active {
    #[prost(bool, tag = "1")]
    pub active: bool,
}

/// `CheckResponse.status.code` (fields 1 and 1), the rest skipped.
#[derive(Clone, PartialEq, Message)]
pub struct CheckStatus {
    #[prost(message, optional, tag = "1")]
    status: Option<StatusCode>,
}

impl CheckStatus {
    /// Envoy lets the request through on an OK status.
    pub fn allowed(&self) -> bool {
        self.status.as_ref().is_some_and(|status| status.code == 0)
    }
}

/// `google.rpc.Status.code`.
#[derive(Clone, PartialEq, Message)]
struct StatusCode {
    #[prost(int32, tag = "1")]
    code: i32,
}

/// Sends bytes as they are; decodes `T`.
struct Lean<T>(PhantomData<T>);

impl<T> Default for Lean<T> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T: Message + Default + Send + 'static> Codec for Lean<T> {
    type Encode = Bytes;
    type Decode = T;
    type Encoder = Raw;
    type Decoder = Fields<T>;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Fields<T> {
        Fields(PhantomData)
    }
}

struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

struct Fields<T>(PhantomData<T>);

impl<T: Message + Default> Decoder for Fields<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(buf).map(Some).map_err(|error| Status::internal(error.to_string()))
    }
}
